"""The `jobtracker` command as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.old_schema import old_sqlite_database


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


def key_id_of(created: subprocess.CompletedProcess[str]) -> str:
    assert created.returncode == 0, created.stderr
    return created.stdout.split()[1]


def listed_bindings(cwd: Path) -> dict[str, str]:
    """`keys list` as {key id: binding column} (tab-separated when not on a terminal)."""
    listed = jobtracker("keys", "list", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t")[::4] == ["ID", "BINDING"]
    return {line.split("\t")[0]: line.split("\t")[4] for line in rows}


def test_worker_keys_are_bound_to_owner_keys_and_listed_with_their_binding(
    tmp_path: Path,
) -> None:
    """`--owner` (repeatable) binds a worker key to owner keys, `--all-owners` to every owner;
    `keys list` shows each key's binding."""
    alice = key_id_of(jobtracker("keys", "create", "--name", "alice", cwd=tmp_path))
    bob = key_id_of(jobtracker("keys", "create", "--name", "bob", cwd=tmp_path))
    bound = jobtracker("keys", "create", "--name", "celery", "--scope", "worker",
                       "--owner", bob, "--owner", alice, cwd=tmp_path)
    platform = jobtracker("keys", "create", "--name", "platform", "--scope", "worker",
                          "--all-owners", cwd=tmp_path)
    assert f"scope worker for {','.join(sorted([alice, bob]))}" in bound.stdout
    assert listed_bindings(tmp_path) == {
        alice: "-", bob: "-", key_id_of(bound): ",".join(sorted([alice, bob])),
        key_id_of(platform): "all owners",
    }


@pytest.fixture(scope="module")
def keys_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder whose ./jobtracker.db holds an owner key, a revoked one and a worker key."""
    folder = tmp_path_factory.mktemp("keys")
    ids = {
        name: key_id_of(jobtracker("keys", "create", "--name", name, *flags, cwd=folder))
        for name, flags in (("owner", ()), ("revoked", ()),
                            ("worker", ("--scope", "worker", "--all-owners")))
    }
    assert jobtracker("keys", "revoke", ids["revoked"], cwd=folder).returncode == 0
    return folder, ids


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--scope", "worker"], "a worker key needs --owner KEY_ID (repeatable) or --all-owners"),
        (["--scope", "worker", "--owner", "{owner}", "--all-owners"],
         "--owner and --all-owners exclude each other"),
        (["--owner", "{owner}"], "--owner and --all-owners are for worker keys"),
        (["--scope", "owner", "--all-owners"], "--owner and --all-owners are for worker keys"),
        (["--scope", "worker", "--owner", "key_nobody"], "no key has the id 'key_nobody'"),
        (["--scope", "worker", "--owner", "{revoked}"], "is revoked"),
        (["--scope", "worker", "--owner", "{owner}", "--owner", "{worker}"],
         "is not an owner key"),
    ],
)
def test_keys_create_refuses_a_bad_binding_in_one_line_with_exit_2(
    keys_folder: tuple[Path, dict[str, str]], flags: list[str], message: str
) -> None:
    """A worker key without a binding, both bindings, a binding on an owner key or an owner that
    is not an active owner key: one line on stderr, exit 2, no key."""
    folder, ids = keys_folder
    args = [flag.format(**ids) for flag in flags]
    result = jobtracker("keys", "create", "--name", "celery", *args, cwd=folder)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("jobtracker: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_worker_keys_from_before_the_upgrade_are_listed_as_all_owners(tmp_path: Path) -> None:
    """A database made by the previous version: its worker key is listed as `all owners`."""
    old_sqlite_database(tmp_path / "jobtracker.db")
    assert listed_bindings(tmp_path) == {"key_oldowner": "-", "key_oldworker": "all owners"}
