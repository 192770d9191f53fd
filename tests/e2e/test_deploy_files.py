"""The Dockerfile and deploy/compose.yaml, read as Docker would read them (no container runtime
here): every command they run exists and parses, every variable they set is one `serve` reads,
and the image's HEALTHCHECK, run as is, passes against a real server."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobtracker.cli import demo_worker
from jobtracker.cli.main import _parser
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.url import parse_store_url
from tests.e2e.serving import jobtracker, seed, serving, stop

ROOT = Path(__file__).resolve().parents[2]
#: `${NAME}` and `${NAME:?message}` as compose interpolates them, and `$$` (a literal `$`).
INTERPOLATED = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile() if found == keyword]


def serve_variables() -> set[str]:
    """The JOBTRACKER_* variables `serve --help` names, and the store's."""
    shown = subprocess.run(jobtracker("serve", "--help"), capture_output=True, text=True,
                           timeout=60, check=True).stdout
    return set(re.findall(r"\[env (JOBTRACKER_\w+)\]", " ".join(shown.split()))) | {
        "JOBTRACKER_STORE"}


def parses_as_jobtracker(argv: list[str], environ: dict[str, str]) -> None:
    """`jobtracker ARGV` with `environ` is a command our parser accepts, store URL included."""
    arguments = _parser(environ if argv[:1] == ["serve"] else None).parse_args(argv)
    if arguments.store is None and "JOBTRACKER_STORE" in environ:
        parse_store_url(environ["JOBTRACKER_STORE"])


def interpolated(text: str) -> str:
    """`text` as compose would pass it, with a stand-in value for every variable."""
    return INTERPOLATED.sub("stand-in", text).replace("$$", "$")


def test_the_image_runs_jobtracker_serve_as_a_user_who_is_not_root() -> None:
    """A slim Python 3.11 base; the entrypoint is `jobtracker serve`; USER is set, not root."""
    assert all(re.fullmatch(r"python:3\.11-slim( AS \w+)?", base) for base in instruction("FROM"))
    (entrypoint,) = instruction("ENTRYPOINT")
    assert json.loads(entrypoint) == ["jobtracker", "serve"]
    (user,) = instruction("USER")
    assert user not in ("root", "0")
    keywords = [keyword for keyword, _ in dockerfile()]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    environ = dict(shlex.split(pair)[0].split("=", 1) for pair in _env_pairs())
    assert set(environ) - {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
                           "PIP_DISABLE_PIP_VERSION_CHECK"} <= serve_variables()
    parses_as_jobtracker(json.loads(entrypoint)[1:], environ)


def _env_pairs() -> list[str]:
    return [pair for line in instruction("ENV") for pair in shlex.split(line, posix=False)]


def test_the_image_copies_only_what_the_repository_has() -> None:
    """Every COPY source (outside the build stage's own output) exists in a checkout."""
    for line in instruction("COPY"):
        *sources, _ = shlex.split(line)
        if any(source.startswith("--from") for source in sources):
            continue
        for source in sources:
            assert (ROOT / source).exists(), source


def test_the_healthcheck_probes_healthz_and_passes_against_a_real_server(tmp_path: Path) -> None:
    """The HEALTHCHECK's own command, run as the image would, exits 0 against `serve`; /healthz
    is a route of the app."""
    (healthcheck,) = instruction("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    routes = {r.resource.canonical for r in create_app(Settings()).router.routes() if r.resource}
    assert "/healthz" in routes
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    with serving(store, tmp_path / "serve.log") as (server, base):
        port = base.rsplit(":", 1)[1]
        probe = subprocess.run([sys.executable, *command[1:]], timeout=30, check=False,
                               env={**os.environ, "JOBTRACKER_PORT": port})
        assert probe.returncode == 0
        assert stop(server)[0] == 0
    refused = subprocess.run([sys.executable, *command[1:]], timeout=30, check=False,
                             capture_output=True, env={**os.environ, "JOBTRACKER_PORT": port})
    assert refused.returncode != 0  # and it fails when nothing answers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml as compose reads it (YAML merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return loaded


def test_compose_has_postgresql_two_api_servers_and_a_worker(compose: dict[str, Any]) -> None:
    """A PostgreSQL service with a health check; two servers and a worker built from our
    Dockerfile, each waiting for the ones it needs to be healthy."""
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    assert "pg_isready" in services["db"]["healthcheck"]["test"]
    ours = [name for name, service in services.items() if "build" in service]
    assert sorted(ours) == ["api1", "api2", "worker"]
    for name in ours:
        build = services[name]["build"]
        assert (ROOT / "deploy" / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "Dockerfile")
        for needed in services[name]["depends_on"]:
            assert needed in services
    assert services["worker"]["depends_on"]["api1"]["condition"] == "service_healthy"


def test_every_command_compose_runs_parses(compose: dict[str, Any]) -> None:
    """The servers run the image's `jobtracker serve` with variables serve reads; the worker's
    shell script runs `jobtracker keys create` and the demo worker with arguments they accept."""
    known = serve_variables()
    for name in ("api1", "api2", "worker"):
        service = compose["services"][name]
        environ = {key: interpolated(str(value)) for key, value in service["environment"].items()}
        assert set(environ) <= known, name
        if name != "worker":
            assert not {"entrypoint", "command"} & service.keys()
            parses_as_jobtracker(["serve"], environ)
    worker = compose["services"]["worker"]
    assert worker["entrypoint"] == ["sh", "-c"]
    (script,) = worker["command"]
    first, second = (part.strip() for part in interpolated(script).split("&&"))
    inner = re.fullmatch(r"KEY=\$\((.*) \| tail -n 1\)", first)
    assert inner is not None, first
    program, *argv = shlex.split(inner[1])
    assert program == "jobtracker"
    parses_as_jobtracker(argv, environ)
    exec_word, python, dash_m, module, *worker_argv = shlex.split(second)
    assert (exec_word, python, dash_m, module) == ("exec", "python", "-m",
                                                   "jobtracker.cli.demo_worker")
    demo_worker._parser().parse_args(worker_argv)
