"""The package's folders are its layers, and imports point inward only.

domain (pure) <- store <- server, sdk (peers that never import each other) <- cli. The check walks
every module's syntax tree, imports inside functions included, so a lazy import cannot hide.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jobtracker"

#: How deep each layer sits; a module may import its own layer and those below it.
RANK = {"domain": 0, "store": 1, "server": 2, "sdk": 2, "celery": 3, "cli": 3}
#: Layers limited to some of those below them: the Celery integration is an SDK client.
ONLY = {"celery": frozenset({"domain", "sdk", "celery"})}
#: Third-party packages the pure domain may use: value classes, their conversion, and JSON.
DOMAIN_THIRD_PARTY = frozenset({"attrs", "cattrs", "orjson"})
#: Standard-library modules that do I/O or run things concurrently: never in the domain.
IO_MODULES = frozenset({
    "asyncio", "concurrent", "ctypes", "http", "io", "logging", "mmap", "multiprocessing",
    "pathlib", "select", "selectors", "shutil", "signal", "socket", "sqlite3", "ssl",
    "subprocess", "tempfile", "threading", "urllib",
})


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` (the text of dotted `module`) imports, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            # `from jobtracker import sdk` imports the package jobtracker.sdk
            found.update(f"{base}.{alias.name}" for alias in node.names if base == "jobtracker")
    return found


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: the package's own top level)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _pure(top: str) -> bool:
    """Whether the domain may import the top-level package `top`."""
    if top in IO_MODULES:
        return False
    return top in sys.stdlib_module_names or top in DOMAIN_THIRD_PARTY


def violations(module: str, imports: set[str]) -> list[str]:
    """What is wrong with `module` importing `imports`, one sentence each."""
    layer = layer_of(module)
    problems: list[str] = []
    for name in sorted(imports):
        top = name.split(".")[0]
        if layer == "domain" and top != "jobtracker" and not _pure(top):
            problems.append(f"{module} (domain) imports {name}")
        if top != "jobtracker" or layer is None:
            continue
        target = layer_of(name)
        if target is None:
            if name != "jobtracker":
                problems.append(f"{module} imports {name}, outside every layer")
            continue
        higher = RANK[target] > RANK[layer] or (RANK[target] == RANK[layer] and target != layer)
        if higher or (layer in ONLY and target not in ONLY[layer]):
            problems.append(f"{module} ({layer}) imports {name} ({target})")
    return problems


def package_modules() -> dict[str, str]:
    """Each module of the package by dotted name, with its source."""
    modules: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path.read_text(encoding="utf-8")
    return modules


def test_no_module_imports_a_higher_layer_and_the_domain_stays_pure() -> None:
    """No store imports the server, no server the SDK, no domain module a driver or aiohttp."""
    problems = [
        problem
        for module, source in package_modules().items()
        for problem in violations(module, imported_modules(source, module))
    ]
    assert problems == []


def test_every_module_lives_in_a_layer() -> None:
    """Only the package's entry points sit beside the layer folders (and `jobtracker.webhooks`,
    the receivers' import of the SDK's `verify`)."""
    loose = {name for name in package_modules() if layer_of(name) is None}
    assert loose == {"jobtracker", "jobtracker.__main__", "jobtracker.webhooks"}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("jobtracker.domain.fold", "import sqlite3",
         "jobtracker.domain.fold (domain) imports sqlite3"),
        ("jobtracker.domain.fold", "from aiohttp import web",
         "jobtracker.domain.fold (domain) imports aiohttp"),
        ("jobtracker.domain.fold", "def f():\n    import asyncpg",
         "jobtracker.domain.fold (domain) imports asyncpg"),
        ("jobtracker.store.sqlite.log", "from jobtracker.server.app import create_app",
         "jobtracker.store.sqlite.log (store) imports jobtracker.server.app (server)"),
        ("jobtracker.server.jobs", "from jobtracker.sdk.worker import connect",
         "jobtracker.server.jobs (server) imports jobtracker.sdk.worker (sdk)"),
        ("jobtracker.store.feed", "from ..cli import main",
         "jobtracker.store.feed (store) imports jobtracker.cli (cli)"),
        ("jobtracker.celery.task", "from jobtracker.server.app import create_app",
         "jobtracker.celery.task (celery) imports jobtracker.server.app (server)"),
        ("jobtracker.celery.task", "from jobtracker.cli import main",
         "jobtracker.celery.task (celery) imports jobtracker.cli (cli)"),
    ],
)
def test_the_check_names_each_kind_of_violation(module: str, source: str, expected: str) -> None:
    """The checker is not vacuous: a planted upward or impure import is reported."""
    assert expected in violations(module, imported_modules(source, module))


def test_inward_imports_pass_the_check() -> None:
    """Imports of the same or a lower layer, and pure standard-library modules, are fine."""
    source = "import re\nimport attrs\nfrom jobtracker.domain.state import Status\n"
    domain = "jobtracker.domain.fold"
    assert violations(domain, imported_modules(source, domain)) == []
    cli = "from jobtracker.server.serve import serve\nfrom jobtracker.sdk import worker\n"
    assert violations("jobtracker.cli.main", imported_modules(cli, "jobtracker.cli.main")) == []


def test_importing_jobtracker_or_its_sdk_never_imports_celery() -> None:
    """Celery is an optional extra: the package and the SDK load without it."""
    import subprocess

    code = "import jobtracker, jobtracker.sdk.worker, sys; print('celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
