"""The `jobtracker` command as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def jobtracker(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    """The key can be captured with `| tail -1`, and `keys list` never shows it again."""
    store = ("--store", "sqlite:///k.db")
    created = jobtracker("keys", "create", "--name", "ci", *store, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("uc_live_")
    assert len(secret) >= len("uc_live_") + 32
    listed = jobtracker("keys", "list", *store, cwd=tmp_path)
    assert "ci" in listed.stdout
    assert secret not in listed.stdout
    assert secret.encode() not in (tmp_path / "k.db").read_bytes()


def test_keys_revoke_marks_the_key_revoked(tmp_path: Path) -> None:
    """A revoked key is listed as revoked; an unknown id is an error."""
    created = jobtracker("keys", "create", "--name", "ci", cwd=tmp_path)
    key_id = created.stdout.split()[1]
    assert jobtracker("keys", "revoke", key_id, cwd=tmp_path).returncode == 0
    assert "revoked" in jobtracker("keys", "list", cwd=tmp_path).stdout
    assert jobtracker("keys", "revoke", "key_nope", cwd=tmp_path).returncode == 1


def test_default_store_is_jobtracker_db_in_the_working_directory(tmp_path: Path) -> None:
    """Without --store or $JOBTRACKER_STORE, `migrate` makes ./jobtracker.db."""
    result = jobtracker("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "jobtracker.db").exists()


def test_store_url_comes_from_the_environment(tmp_path: Path) -> None:
    """$JOBTRACKER_STORE is used when --store is absent."""
    env = {"JOBTRACKER_STORE": "sqlite:///from-env.db", "PATH": "/usr/bin:/bin"}
    assert jobtracker("migrate", cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "from-env.db").exists()


@pytest.mark.parametrize("url", ["mysql://x", "sqlite:/no-slashes.db", "jobs.db", "memory://x"])
def test_unknown_store_url_is_a_clear_error_with_exit_2(tmp_path: Path, url: str) -> None:
    """A typo in the store URL never creates a database somewhere unexpected."""
    result = jobtracker("migrate", "--store", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "store URL" in result.stderr
    assert list(tmp_path.iterdir()) == []
