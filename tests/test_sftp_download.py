"""Reading archived files back over SFTP (``fetch``, ``checksum``) through pdrflow's own protocol,
against a real OpenSSH sshd on 127.0.0.1: the server's files are written and read directly on
its disk (it is this machine), so every check compares real bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from services.sshd import Sshd
from services.tcp_proxy import TcpProxy

from pdrflow.config import SftpStorageConfig
from pdrflow.storage import sftp_transfer
from pdrflow.storage.base import StorageError, StoredFile, sha256_file
from pdrflow.storage.sftp import SftpStorage
from pdrflow.storage.sftp_errors import CheckedWriter
from pdrflow.storage.sftp_protocol import SftpSession

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parent.parent
MakeConfig = Callable[..., SftpStorageConfig]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.ssh of the machine or ssh-agent may influence a test."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    (tmp_path / "archive").mkdir()
    return tmp_path / "archive"


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    (tmp_path / "copies").mkdir()
    return tmp_path / "copies"


@pytest.fixture
def make_config(sshd: Sshd, tmp_path: Path, archive: Path) -> MakeConfig:
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")

    def make(**overrides: Any) -> SftpStorageConfig:
        fields: dict[str, Any] = {
            "kind": "sftp", "host": sshd.host, "port": sshd.port, "username": "root", "root": str(archive),
            "key_filename": sshd.client_key, "known_hosts": known_hosts, "ssh_config": None,
            "connect_timeout": 5.0, "operation_timeout": 10.0, "files_in_flight": 4, "password": None,
        }
        return SftpStorageConfig(**(fields | overrides))

    return make


@pytest.fixture
def storage(make_config: MakeConfig) -> Iterator[SftpStorage]:
    with SftpStorage(make_config()) as backend:
        yield backend


def on_server(archive: Path, path: str, data: bytes) -> Path:
    """A file written straight onto the server's disk (not through pdrflow)."""
    target = archive / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".pdrflow-" in p.name)


def test_fetch_gives_the_servers_bytes(storage: SftpStorage, archive: Path, copies: Path) -> None:
    for name, size in [("small.out", 3_000), ("model.hdf5", 1_234_567)]:
        remote = on_server(archive, f"g/pdrgrid/{name}", os.urandom(size))
        stored = storage.fetch(f"g/pdrgrid/{name}", copies / name)
        assert (copies / name).read_bytes() == remote.read_bytes()
        assert stored == StoredFile(f"g/pdrgrid/{name}", *sha256_file(remote))
        assert storage.checksum(f"g/pdrgrid/{name}") == stored.sha256
    assert leftovers(copies) == []


def test_a_file_larger_than_the_read_window(
    storage: SftpStorage, archive: Path, copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 reads in flight of ~255 KiB: the 5 MB file needs the window refilled many times, and its
    # size is no multiple of a read, so the last one is short.
    monkeypatch.setattr(sftp_transfer, "READS_IN_FLIGHT", 3)
    remote = on_server(archive, "g/big.hdf5", os.urandom(5_000_003))
    stored = storage.fetch("g/big.hdf5", copies / "big.hdf5")
    assert (copies / "big.hdf5").read_bytes() == remote.read_bytes()
    assert (stored.size, stored.sha256) == sha256_file(remote)
    assert storage.checksum("g/big.hdf5") == stored.sha256


def test_a_server_that_sends_less_than_asked(
    storage: SftpStorage, archive: Path, copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of 1 MiB are answered with at most 255 KiB by OpenSSH: every answer is short, the reads
    queued behind it asked for the wrong offsets, and the download must go on from where it ended."""
    original = SftpSession.__init__

    def greedy(self: SftpSession, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.max_read = 1 << 20

    monkeypatch.setattr(SftpSession, "__init__", greedy)
    storage.close()  # new sessions from here on
    remote = on_server(archive, "g/big.hdf5", os.urandom(3_100_000))
    stored = storage.fetch("g/big.hdf5", copies / "big.hdf5")
    assert (copies / "big.hdf5").read_bytes() == remote.read_bytes()
    assert (stored.size, stored.sha256) == sha256_file(remote)


def test_an_empty_file(storage: SftpStorage, archive: Path, copies: Path) -> None:
    on_server(archive, "g/empty", b"")
    stored = storage.fetch("g/empty", copies / "empty")
    assert (copies / "empty").read_bytes() == b""
    assert stored == StoredFile("g/empty", 0, hashlib.sha256(b"").hexdigest())
    assert storage.checksum("g/empty") == hashlib.sha256(b"").hexdigest()
    assert leftovers(copies) == []


def test_a_missing_file_is_a_clear_persistent_error(
    sshd: Sshd, storage: SftpStorage, archive: Path, copies: Path
) -> None:
    with pytest.raises(StorageError) as missing:
        storage.fetch("g/none.hdf5", copies / "none.hdf5")
    assert str(missing.value) == f"no such file or directory reading {archive}/g/none.hdf5 on 127.0.0.1:{sshd.port}"
    assert not missing.value.transient
    assert list(copies.iterdir()) == []
    # The channel is clean afterwards: the next download on it works.
    on_server(archive, "g/there", b"x" * 70_000)
    assert storage.fetch("g/there", copies / "there").size == 70_000


def test_downloads_keep_reads_in_flight_at_100ms_rtt(
    sshd: Sshd, make_config: MakeConfig, archive: Path, copies: Path, tmp_path: Path
) -> None:
    """16 reads of ~255 KiB: one after another they cost 16 round trips (1.6 s), pipelined about 3."""
    remote = on_server(archive, "g/model.hdf5", os.urandom(4_000_000))
    with TcpProxy(sshd.port, delay=0.05) as proxy:
        known = sshd.write_known_hosts(tmp_path / "known_proxy", proxy.port)
        with SftpStorage(make_config(port=proxy.port, known_hosts=known)) as storage:
            assert storage.stat("warm-up") is None  # connected: only the download is timed
            started = time.monotonic()
            stored = storage.fetch("g/model.hdf5", copies / "model.hdf5")
            elapsed = time.monotonic() - started
    assert (stored.size, stored.sha256) == sha256_file(remote)
    assert elapsed < 1.0, elapsed


def test_a_drop_mid_download_is_retried_on_a_new_connection(
    sshd: Sshd, make_config: MakeConfig, archive: Path, copies: Path, tmp_path: Path
) -> None:
    remote = on_server(archive, "g/model.hdf5", os.urandom(3_000_000))
    with TcpProxy(sshd.port) as proxy:
        known = sshd.write_known_hosts(tmp_path / "known_proxy", proxy.port)
        with SftpStorage(make_config(port=proxy.port, known_hosts=known)) as storage:
            assert storage.stat("warm-up") is None
            proxy.cut_after(1_000_000)

            def heal_after_the_cut() -> None:
                proxy.cut_event.wait(10)
                time.sleep(0.2)
                proxy.heal()

            healer = threading.Thread(target=heal_after_the_cut)
            healer.start()
            stored = storage.fetch("g/model.hdf5", copies / "model.hdf5")
            healer.join()
            assert proxy.cut_event.is_set() and proxy.accepted >= 2
    assert (copies / "model.hdf5").read_bytes() == remote.read_bytes()
    assert (stored.size, stored.sha256) == sha256_file(remote)
    assert leftovers(copies) == []


def test_sshd_killed_mid_download_is_transient_and_leaves_no_local_file(
    make_config: MakeConfig, archive: Path, copies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Larger than pdrflow's 16 MiB receive window: the server cannot have sent it all before the kill.
    remote = on_server(archive, "g/model.hdf5", os.urandom(40_000_000))
    under_way, killed = threading.Event(), threading.Event()
    original = CheckedWriter.write

    def gated(self: CheckedWriter, data: bytes) -> int:
        # The first bytes reached the local copy: hold the download here until the server is dead.
        if not under_way.is_set():
            under_way.set()
            killed.wait(10)
        return original(self, data)

    monkeypatch.setattr(CheckedWriter, "write", gated)
    with Sshd(workdir=tmp_path / "own-sshd") as server:
        known = server.write_known_hosts(tmp_path / "own_known_hosts")
        config = make_config(port=server.port, known_hosts=known, key_filename=server.client_key,
                             operation_timeout=1.0)  # bounds the retrying while the server is down
        with SftpStorage(config) as storage:
            outcome: list[StorageError | StoredFile] = []

            def fetch() -> None:
                try:
                    outcome.append(storage.fetch("g/model.hdf5", copies / "model.hdf5"))
                except StorageError as exc:  # handed to the test's thread (anything else: outcome stays empty)
                    outcome.append(exc)

            downloader = threading.Thread(target=fetch)
            downloader.start()
            assert under_way.wait(20), "the download never started"
            partial_at_kill = leftovers(copies)
            server.kill()
            killed.set()
            downloader.join(30)
            assert partial_at_kill, "no partial copy at the kill: it did not land mid-download"
            [error] = outcome
            assert isinstance(error, StorageError), error
            assert error.transient
            assert f"127.0.0.1:{server.port}" in str(error)
            assert list(copies.iterdir()) == []  # neither the final name nor the partial copy

            server.start()  # back: the same storage reads it on a new connection
            stored = storage.fetch("g/model.hdf5", copies / "model.hdf5")
    assert (stored.size, stored.sha256) == sha256_file(remote)
    assert leftovers(copies) == []


def test_nothing_goes_through_paramikos_sftp_client(
    storage: SftpStorage, archive: Path, copies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("paramiko.SFTPClient used")

    monkeypatch.setattr(paramiko.SFTPClient, "__init__", refused)
    local = tmp_path / "a.hdf5"
    local.write_bytes(os.urandom(300_000))
    size, sha = sha256_file(local)
    storage.put(local, "g/a.hdf5", size=size, sha256=sha)
    assert storage.existing(["g/a.hdf5", "g/b"]) == {"g/a.hdf5": size}
    assert storage.checksum("g/a.hdf5") == sha
    assert storage.fetch("g/a.hdf5", copies / "a.hdf5") == StoredFile("g/a.hdf5", size, sha)
    storage.rename("g/a.hdf5", "g/moved/a.hdf5")
    assert storage.remove_temporaries(["g/moved/a.hdf5"]) == 0
    assert (archive / "g/moved/a.hdf5").read_bytes() == local.read_bytes()


def test_the_storage_module_imports_without_paramiko() -> None:
    """Config loading imports the kind's module: it must not pull in paramiko."""
    probe = "import sys, pdrflow.storage.sftp; print(sorted(m for m in sys.modules if m.startswith('paramiko')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"
