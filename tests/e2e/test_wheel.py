"""An installed package, not a source checkout, carries and applies its migrations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_migrations_work_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel, install it alone in a folder, and migrate a fresh database with it."""
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT),
        cwd=tmp_path)
    [wheel] = tmp_path.glob("jobtracker-*.whl")
    target = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
        str(wheel), cwd=tmp_path)
    script = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import jobtracker.store.migrate as m; "
        f"assert m.__file__.startswith({str(target)!r}), m.__file__; "
        "from jobtracker.cli.main import main; raise SystemExit(main(['migrate']))"
    )
    out = run(sys.executable, "-c", script, cwd=tmp_path)
    assert "migrated" in out
    tables = run(sys.executable, "-c",
                 "import sqlite3; print(sorted(r[0] for r in sqlite3.connect('jobtracker.db')"
                 ".execute(\"select name from sqlite_master where type='table'\")))",
                 cwd=tmp_path)
    assert "'log'" in tables
    assert "'schema_migrations'" in tables
