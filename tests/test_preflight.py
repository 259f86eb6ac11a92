"""The preflight (issue 15, item 2): a run that cannot finish does not start a single model.

Each scenario is a real ``pdrflow run`` whose archive, executables or database cannot work: it
exits 2 with the reason, records no model attempt and writes nothing into the archive. Persistent
storage errors (permission, read-only, no space) are classified as such, so that an archival
hitting one mid-run fails at once instead of backing off and retrying (tests/test_fault_matrix.py
covers that end to end).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, cli, files_under, ledger_rows, privileged, write_config
from services.sshd import Sshd, SystemUser

from pdrflow.storage import StorageError
from pdrflow.storage.local import LocalStorage

pytestmark = pytest.mark.timeout(120)


def _nothing_happened(tmp_path: Path, archive: Path, output: str) -> None:
    """No model attempt, no job moved, no byte in the archive, no scratch directory."""
    db = tmp_path / "ledger.sqlite"
    if db.exists():
        assert ledger_rows(db, "select count(*) from attempts") == [(0,)], output
        assert ledger_rows(db, "select count(*) from jobs where state != 'pending'") == [(0,)], output
    assert files_under(archive) == [], output
    assert files_under(tmp_path / "scratch") == [], output


def _run_refused(tmp_path: Path, config: Path, *expected: str, env: dict[str, str] | None = None) -> str:
    done = cli("run", str(config), env=env, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    for text in expected:
        assert text in done.stderr.lower(), output
    assert "Traceback" not in output
    return output


def _mount(*argv: str) -> None:
    privileged("mount", *argv)


def _chattr(flag: str, path: Path) -> None:
    privileged("chattr", flag, str(path))


def test_read_only_archive_is_refused_before_any_model(tmp_path: Path, null_home: Path) -> None:
    """A read-only bind mount (EROFS; we run as root, so mode 0555 would not stop us)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home))
    _mount("--bind", str(archive), str(archive))
    try:
        _mount("-o", "remount,ro,bind", str(archive))
        output = _run_refused(tmp_path, config, "preflight", "read-only file system")
    finally:
        subprocess.run(["umount", str(archive)], capture_output=True, timeout=30, check=False)
    _nothing_happened(tmp_path, archive, output)
    # the fault cleared: the same command runs the grid
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ledger_rows(tmp_path / "ledger.sqlite", "select count(*) from attempts where kind = 'model'") == [(4,)]
    assert not [p for p in files_under(archive) if "probe" in p.name]  # the probe left nothing behind


def test_immutable_archive_is_refused_before_any_model(tmp_path: Path, null_home: Path) -> None:
    """``chattr +i`` on the archive root: even root gets EPERM."""
    archive = tmp_path / "archive"
    archive.mkdir()
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home))
    _chattr("+i", archive)
    try:
        output = _run_refused(tmp_path, config, "preflight", "the archive cannot be written",
                              "operation not permitted")
    finally:
        _chattr("-i", archive)
    _nothing_happened(tmp_path, archive, output)


def test_missing_executable_is_refused_before_any_model(tmp_path: Path, null_home: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(null_home, home, symlinks=True)
    (home / "onionexe").unlink()
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home))
    output = _run_refused(tmp_path, config, "onion_executable", "does not exist")
    _nothing_happened(tmp_path, tmp_path / "archive", output)


def test_unreachable_database_is_refused_before_any_model(tmp_path: Path, null_home: Path) -> None:
    """A PostgreSQL URL on a port where nothing listens (connection refused); the password stays hidden."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path / "run.yaml", base_config(
        tmp_path, home=null_home, database={"url": f"postgresql+psycopg://pdrflow@127.0.0.1:{port}/ledger"}))
    output = _run_refused(tmp_path, config, "cannot open the ledger", env={"PDRFLOW_DB_PASSWORD": "s3cret-pw"})
    assert "s3cret-pw" not in output
    _nothing_happened(tmp_path, tmp_path / "archive", output)


@pytest.fixture
def sftp_user() -> Iterator[SystemUser]:
    account = SystemUser.create(prefix="pdrpre")
    yield account
    account.remove()


def test_sftp_root_not_writable_is_refused_before_any_model(
    tmp_path: Path, null_home: Path, sshd: Sshd, sftp_user: SystemUser, public_dir: Path
) -> None:
    """Over SFTP to a real sshd: the remote root belongs to root (0755), the SFTP user may not write there."""
    root = public_dir / "archive"
    root.mkdir()
    root.chmod(0o755)
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    storage: dict[str, Any] = {
        "kind": "sftp", "host": sshd.host, "port": sshd.port, "username": sftp_user.name, "root": str(root),
        "key_filename": str(sshd.client_key), "known_hosts": str(known), "connect_timeout": 5,
        "operation_timeout": 10,
    }
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "SSH_AUTH_SOCK": "", "PDRFLOW_SFTP_PASSWORD": "", "PDR_STORAGE_PASSWORD": ""}
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home, storage=storage))
    output = _run_refused(tmp_path, config, "preflight", "permission denied", env=env)
    _nothing_happened(tmp_path, root, output)
    # writable for that user now: the same command archives the grid (the probe works over SFTP too)
    shutil.chown(root, sftp_user.name, sftp_user.name)
    done = cli("run", str(config), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [p for p in files_under(root) if "probe" in p.name]


def test_persistent_storage_errors_are_not_transient(tmp_path: Path) -> None:
    """What decides "fail at once" versus "retry with backoff": the backend's classification, kept across pickling."""
    import pickle

    root = tmp_path / "archive"
    root.mkdir()
    staged = tmp_path / "staged"
    staged.write_bytes(b"x")
    sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    _chattr("+i", root)
    try:
        with pytest.raises(StorageError) as refused:
            LocalStorage(root).put(staged, "g/pdrgrid/x", size=1, sha256=sha)
    finally:
        _chattr("-i", root)
    error = refused.value
    assert (error.persistent, error.transient) == (True, False), str(error)
    assert os.strerror(errno.EPERM).lower() in str(error).lower()
    copy = pickle.loads(pickle.dumps(error))  # as it reaches the driver from a Dask worker
    assert (copy.persistent, copy.transient, str(copy)) == (True, False, str(error))
    # a transient error is never persistent
    assert not StorageError("timed out", transient=True, persistent=True).persistent
