"""The package as a user gets it: the wheel built from this checkout, installed from PyPI into a
fresh virtual environment with no extras.

Slow (one `pip install` over the network, about a minute): marked `network`, so
`pytest -m 'not network'` leaves it out. Everything is checked against that one install.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.network


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT, cwd=out)
    [built] = out.glob("jobtracker-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install jobtracker-….whl` and nothing else: its bin folder."""
    home = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", home / "venv", cwd=home)
    bin_dir = home / "venv" / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=home)
    return bin_dir


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_the_wheel_carries_types_license_and_a_readme_an_index_can_render(wheel: Path) -> None:
    """py.typed and the MIT LICENSE are in the wheel; the metadata says MIT, links the project,
    offers the postgres, celery and dev extras, and its README links nothing beside the repo."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        license_text = archive.read(
            next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))).decode()
    assert "jobtracker/py.typed" in names
    assert any(n.startswith("jobtracker/_migrations/sqlite/") for n in names)
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2026 The jobtracker authors" in license_text
    meta = metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert {"postgres", "celery", "dev"} <= set(meta.get_all("Provides-Extra") or [])
    requires = meta.get_all("Requires-Dist") or []
    assert [r for r in requires if r.startswith("asyncpg")] == [
        r for r in requires if r.startswith("asyncpg") and "extra ==" in r]
    assert not any(r.startswith("sqlite-utils") for r in requires)
    urls = meta.get_all("Project-URL") or []
    assert "Repository, https://github.com/jobtracker/jobtracker" in urls
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])
    readme = meta.get_payload()
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "../" not in readme
    assert "](" not in readme.replace("](https://", "")  # only absolute links


def test_a_fresh_install_has_no_postgresql_driver_yet_imports_everything(venv: Path) -> None:
    """No asyncpg (nor sqlite-utils) unless asked for; the package, the server and the CLI
    import all the same."""
    probe = ("import importlib.util as u\n"
             "print([m for m in ('asyncpg', 'sqlite_utils', 'celery') if u.find_spec(m)])\n"
             "import jobtracker, jobtracker.server.app, jobtracker.cli.main\n"
             "print(jobtracker.Conflict.__mro__[1].__name__)")
    done = run(venv / "python", "-c", probe, cwd=venv)
    assert done.stdout.split() == ["[]", "JobtrackerError"]


def test_a_postgresql_store_without_the_extra_says_what_to_install(
    venv: Path, tmp_path: Path
) -> None:
    """`--store postgresql://…` on the base install: one line naming the extra, exit 2."""
    done = run(venv / "jobtracker", "keys", "list", "--store", "postgresql://u@127.0.0.1/jobs",
               cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "jobtracker: error: a postgresql:// store needs the asyncpg driver: "
        "pip install 'jobtracker[postgres]'"
    ]


def test_version_and_demo_work_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """`jobtracker --version` names the version; `jobtracker demo` ends with SUCCESS."""
    from jobtracker import __version__

    version = run(venv / "jobtracker", "--version", cwd=tmp_path)
    assert version.stdout == f"jobtracker {__version__}\n"
    demo = run(venv / "jobtracker", "demo", cwd=tmp_path)
    assert '"status": "SUCCESS"' in demo.stdout
    assert " Progress: " in demo.stdout
