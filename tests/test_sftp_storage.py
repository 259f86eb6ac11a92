"""The SFTP backend against a real OpenSSH sshd on 127.0.0.1 (tests/services/sshd.py).

Every test checks real outcomes: the bytes on the server's disk, the absence of a file at
the final path, the exception's class, ``transient`` flag and message.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from services.sshd import Sshd, SystemUser
from services.tcp_proxy import TcpProxy

from pdrflow.config import SftpStorageConfig
from pdrflow.storage import open_storage
from pdrflow.storage.base import StorageError, StoredFile, sha256_file
from pdrflow.storage.sftp import SftpStorage
from pdrflow.storage.sftp_protocol import SftpSession
from pdrflow.storage.sftp_transfer import BackgroundFlush

CANARY = "canary-Pw-7f3a9c-do-not-log"

pytestmark = pytest.mark.timeout(60)


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user() -> Iterator[SystemUser]:
    account = SystemUser.create(password=CANARY)
    yield account
    account.remove()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ~/.ssh/config, default keys or ssh-agent of the machine may influence a test."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def known_hosts(sshd: Sshd, tmp_path: Path) -> Path:
    return sshd.write_known_hosts(tmp_path / "known_hosts")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    return root


MakeConfig = Callable[..., SftpStorageConfig]


@pytest.fixture
def proxy(sshd: Sshd, known_hosts: Path) -> Iterator[TcpProxy]:
    """A fault-injecting proxy in front of sshd, trusted in known_hosts under its own port."""
    with TcpProxy(sshd.port) as running:
        sshd.write_known_hosts(known_hosts, running.port)
        yield running


@pytest.fixture
def make_config(sshd: Sshd, known_hosts: Path, archive: Path) -> MakeConfig:
    def make(**overrides: Any) -> SftpStorageConfig:
        fields: dict[str, Any] = {
            "kind": "sftp",
            "host": sshd.host,
            "port": sshd.port,
            "username": "root",
            "root": str(archive),
            "key_filename": sshd.client_key,
            "known_hosts": known_hosts,
            "ssh_config": None,
            "connect_timeout": 5.0,
            "operation_timeout": 10.0,
            "files_in_flight": 4,
            "password": None,
        }
        fields.update(overrides)
        return SftpStorageConfig(**fields)

    return make


@pytest.fixture
def storage(make_config: MakeConfig) -> Iterator[SftpStorage]:
    with SftpStorage(make_config()) as backend:
        yield backend


def write_file(path: Path, size: int) -> tuple[Path, int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return (path, *sha256_file(path))


def model_outputs(directory: Path) -> list[tuple[Path, str, int, str]]:
    """A KOSMA-tau model's file set in miniature: two HDF5 files and many small text files."""
    items = []
    for name, size in [("pdrstruct_s.hdf5", 1_500_000), ("pdrchem_c.hdf5", 700_000)] + [
        (f"jerg_{i}.smli", 10_000 + 997 * i) for i in range(24)
    ]:
        path, size, sha = write_file(directory / name, size)
        items.append((path, f"testgrid/pdrgrid/{name}", size, sha))
    return items


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".pdrflow-" in p.name)


def fingerprint_of(public_key_file: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return out.split()[1]


# ---- round trip ---------------------------------------------------------------------------


def test_round_trip_of_a_models_outputs(storage: SftpStorage, archive: Path, tmp_path: Path) -> None:
    items = model_outputs(tmp_path / "staged")
    stored = storage.put_many(items)
    assert stored == [StoredFile(path, size, sha) for _, path, size, sha in items]
    for local, path, size, sha in items:
        assert (archive / path).read_bytes() == local.read_bytes()
        assert storage.stat(path) == size
        assert storage.checksum(path) == sha
    assert leftovers(archive) == []
    assert storage.stat("testgrid/pdrgrid/missing") is None
    assert storage.checksum("testgrid/nodir/missing") is None


def test_already_archived_file_is_not_uploaded_again(storage: SftpStorage, archive: Path, tmp_path: Path) -> None:
    local, size, sha = write_file(tmp_path / "a.hdf5", 200_000)
    storage.put(local, "g/a.hdf5", size=size, sha256=sha)
    before = (archive / "g/a.hdf5").stat()
    storage.put(local, "g/a.hdf5", size=size, sha256=sha)
    after = (archive / "g/a.hdf5").stat()
    # Same inode and mtime: nothing was written or renamed the second time.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_different_content_replaces_the_file_atomically(storage: SftpStorage, archive: Path, tmp_path: Path) -> None:
    first, size1, sha1 = write_file(tmp_path / "one", 50_000)
    second, size2, sha2 = write_file(tmp_path / "two", 50_000)
    storage.put(first, "g/x.dat", size=size1, sha256=sha1)
    inode = (archive / "g/x.dat").stat().st_ino
    storage.put(second, "g/x.dat", size=size2, sha256=sha2)
    assert (archive / "g/x.dat").read_bytes() == second.read_bytes()
    assert (archive / "g/x.dat").stat().st_ino != inode  # a new file renamed over, not rewritten in place
    assert leftovers(archive) == []


def test_fallback_rename_without_the_posix_rename_extension(
    storage: SftpStorage, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SftpSession.__init__

    def without_posix_rename(self: SftpSession, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.use_posix_rename = False  # as on a server that lacks posix-rename@openssh.com

    monkeypatch.setattr(SftpSession, "__init__", without_posix_rename)
    storage.close()  # new sessions from here on
    first, size1, sha1 = write_file(tmp_path / "one", 40_000)
    second, size2, sha2 = write_file(tmp_path / "two", 30_000)
    storage.put(first, "g/x.dat", size=size1, sha256=sha1)
    storage.put(second, "g/x.dat", size=size2, sha256=sha2)
    assert (archive / "g/x.dat").read_bytes() == second.read_bytes()
    assert leftovers(archive) == []


def test_a_large_file_is_flushed_from_a_spare_channel_while_it_streams(
    storage: SftpStorage, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BackgroundFlush, "EVERY", 1 << 20)  # "large" = 2 MiB here, to keep the test fast
    flushers: list[BackgroundFlush] = []
    original = BackgroundFlush.__init__

    def spy(self: BackgroundFlush, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        flushers.append(self)

    monkeypatch.setattr(BackgroundFlush, "__init__", spy)
    local, size, sha = write_file(tmp_path / "big.hdf5", 6_000_000)
    storage.put(local, "g/big.hdf5", size=size, sha256=sha)
    assert (archive / "g/big.hdf5").read_bytes() == local.read_bytes()
    assert len(flushers) == 1 and flushers[0]._next_at > 2 << 20  # it did flush while writing
    assert leftovers(archive) == []
    small, size, sha = write_file(tmp_path / "small", 100_000)
    storage.put(small, "g/small", size=size, sha256=sha)
    assert len(flushers) == 1  # small files need no helper channel


def test_staged_file_that_changed_is_refused(storage: SftpStorage, archive: Path, tmp_path: Path) -> None:
    local, size, _ = write_file(tmp_path / "a", 10_000)
    with pytest.raises(StorageError) as caught:
        storage.put(local, "g/a", size=size, sha256="0" * 64)
    assert not caught.value.transient
    assert "changed while archiving" in str(caught.value)
    assert not (archive / "g/a").exists()
    assert leftovers(archive) == []


def test_missing_staged_file_is_a_persistent_error(storage: SftpStorage, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        storage.put(tmp_path / "nope", "g/a", size=1, sha256="0" * 64)
    assert not caught.value.transient
    assert "cannot read staged file" in str(caught.value)


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a//b", "a/./b", ""])
def test_unsafe_paths_are_refused(storage: SftpStorage, tmp_path: Path, bad: str) -> None:
    local, size, sha = write_file(tmp_path / "a", 10)
    with pytest.raises(StorageError, match="unsafe archive path"):
        storage.put(local, bad, size=size, sha256=sha)
    with pytest.raises(StorageError, match="unsafe archive path"):
        storage.put_many([(local, bad, size, sha)])


def test_one_connection_is_reused_across_files_and_threads(
    sshd: Sshd, proxy: TcpProxy, make_config: MakeConfig, archive: Path, tmp_path: Path
) -> None:
    with SftpStorage(make_config(port=proxy.port)) as storage:
        items = model_outputs(tmp_path / "staged")
        storage.put_many(items)
        for local, path, size, sha in items[:3]:
            storage.put(local, path.replace("pdrgrid", "again"), size=size, sha256=sha)
        assert storage.checksum(items[0][1]) == items[0][3]
        assert proxy.accepted == 1


def test_storage_pickles_without_its_connection(storage: SftpStorage, tmp_path: Path, archive: Path) -> None:
    local, size, sha = write_file(tmp_path / "a", 1000)
    storage.put(local, "g/a", size=size, sha256=sha)
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.checksum("g/a") == sha
    clone.close()
    error = pickle.loads(pickle.dumps(StorageError("x", transient=True)))
    assert error.transient


def test_open_storage_builds_the_sftp_backend(make_config: MakeConfig) -> None:
    with open_storage(make_config()) as backend:
        assert isinstance(backend, SftpStorage)
        assert backend.description.startswith("sftp://root@127.0.0.1:")


# ---- host keys ----------------------------------------------------------------------------


def test_unknown_host_key_is_refused(sshd: Sshd, make_config: MakeConfig, tmp_path: Path, archive: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    local, size, sha = write_file(tmp_path / "a", 10)
    with SftpStorage(make_config(known_hosts=empty)) as storage, pytest.raises(StorageError) as caught:
        storage.put(local, "g/a", size=size, sha256=sha)
    message = str(caught.value)
    assert not caught.value.transient
    assert f"host key for [127.0.0.1]:{sshd.port} is not in {empty}" in message
    assert f"ssh-keyscan -t ssh-ed25519 -p {sshd.port} 127.0.0.1 >> {empty}" in message
    assert fingerprint_of(sshd.host_key.with_suffix(".pub")) in message
    assert empty.read_text() == ""  # never added automatically
    assert list(archive.iterdir()) == []


def test_changed_host_key_is_refused(sshd: Sshd, make_config: MakeConfig, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    public = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
        check=False,
        capture_output=True,
        timeout=10,
    )
    assert public.returncode == 0
    key_type, key_data = (tmp_path / "impostor.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts_changed"
    known.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key_data}\n")
    with SftpStorage(make_config(known_hosts=known)) as storage, pytest.raises(StorageError) as caught:
        storage.stat("anything")
    message = str(caught.value)
    assert not caught.value.transient
    assert "CHANGED" in message
    assert fingerprint_of(tmp_path / "impostor.pub") in message  # what the file says
    assert fingerprint_of(sshd.host_key.with_suffix(".pub")) in message  # what the server offers
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known}" in message


def test_hashed_known_hosts_entries_are_accepted(sshd: Sshd, make_config: MakeConfig, known_hosts: Path) -> None:
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], capture_output=True, check=True, timeout=10)
    assert "127.0.0.1" not in known_hosts.read_text()  # really hashed (Debian's HashKnownHosts yes)
    with SftpStorage(make_config()) as storage:
        assert storage.stat("missing") is None


def test_revoked_host_key_is_refused(sshd: Sshd, make_config: MakeConfig, known_hosts: Path) -> None:
    key_type, key_data = sshd.host_public_key.split()[:2]
    known_hosts.write_text(known_hosts.read_text() + f"@revoked * {key_type} {key_data}\n")
    with SftpStorage(make_config()) as storage, pytest.raises(StorageError, match="@revoked") as caught:
        storage.stat("missing")
    assert not caught.value.transient


def test_default_known_hosts_is_the_users(sshd: Sshd, make_config: MakeConfig, isolated_home: Path) -> None:
    with SftpStorage(make_config(known_hosts=None)) as storage, pytest.raises(StorageError) as caught:
        storage.stat("missing")
    assert f"is not in {isolated_home / '.ssh' / 'known_hosts'}" in str(caught.value)
    sshd.write_known_hosts(isolated_home / ".ssh" / "known_hosts")
    with SftpStorage(make_config(known_hosts=None)) as storage:
        assert storage.stat("missing") is None


# ---- authentication -----------------------------------------------------------------------


def test_password_authentication_and_the_canary_never_shows(
    sshd: Sshd,
    user: SystemUser,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    public_dir: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # paramiko's debug log included
    root = public_dir / "user-archive"
    root.mkdir()
    os.chown(root, user.uid, user.gid)
    local, size, sha = write_file(tmp_path / "a", 5000)
    config = make_config(username=user.name, key_filename=None, root=str(root), password=SecretStr(CANARY))
    assert CANARY not in repr(config) and CANARY not in str(config)
    with SftpStorage(config) as storage:
        storage.put(local, "g/a", size=size, sha256=sha)
        assert CANARY not in repr(storage)
        pickled = pickle.dumps(storage)
    assert (root / "g/a").read_bytes() == local.read_bytes()
    assert (root / "g/a").stat().st_uid == user.uid

    wrong = make_config(username=user.name, key_filename=None, root=str(root), password=SecretStr(CANARY + "x"))
    with SftpStorage(wrong) as storage, pytest.raises(StorageError) as caught:
        storage.stat("g/a")
    assert not caught.value.transient
    assert f"authentication failed for {user.name}@127.0.0.1:{sshd.port}" in str(caught.value)
    assert "password from PDRFLOW_SFTP_PASSWORD rejected" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caplog.text, *capsys.readouterr()):
        assert CANARY not in text
    assert caplog.text  # the log was really captured (else the check above proves nothing)
    # the password never travels in a pickle: the receiving process reads it from its own environment
    assert CANARY.encode() not in pickled


def test_key_authentication_as_a_normal_user(
    sshd: Sshd, user: SystemUser, make_config: MakeConfig, tmp_path: Path, public_dir: Path
) -> None:
    root = public_dir / "user-archive"
    root.mkdir()
    os.chown(root, user.uid, user.gid)
    local, size, sha = write_file(tmp_path / "a", 5000)
    with SftpStorage(make_config(username=user.name, root=str(root))) as storage:
        storage.put(local, "g/a", size=size, sha256=sha)
    assert (root / "g/a").stat().st_uid == user.uid


def test_rejected_key_and_no_credentials(make_config: MakeConfig, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True, timeout=10)
    with SftpStorage(make_config(key_filename=stranger)) as storage, pytest.raises(StorageError) as caught:
        storage.stat("x")
    assert not caught.value.transient
    assert f"key {stranger} rejected" in str(caught.value)
    with SftpStorage(make_config(key_filename=None)) as storage, pytest.raises(StorageError) as caught:
        storage.stat("x")
    assert not caught.value.transient
    assert "no credentials" in str(caught.value)


def test_ssh_config_alias(sshd: Sshd, make_config: MakeConfig, archive: Path, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host archive-server\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User root\n"
        f"    IdentityFile {sshd.client_key}\n"
    )
    config = make_config(host="archive-server", port=None, username=None, key_filename=None, ssh_config=ssh_config)
    local, size, sha = write_file(tmp_path / "a", 3000)
    with SftpStorage(config) as storage:
        assert storage.description == f"sftp://root@127.0.0.1:{sshd.port}{archive}"
        storage.put(local, "g/a", size=size, sha256=sha)
    assert (archive / "g/a").read_bytes() == local.read_bytes()

    # Explicit fields win over ssh_config: a wrong Port there is overridden by storage.port.
    ssh_config.write_text(ssh_config.read_text().replace(f"Port {sshd.port}", "Port 1"))
    with SftpStorage(make_config(host="archive-server", port=sshd.port, ssh_config=ssh_config)) as storage:
        assert storage.checksum("g/a") == sha
    # ...and without the explicit port the alias's (wrong) port is really used.
    config = make_config(host="archive-server", port=None, ssh_config=ssh_config, operation_timeout=1.0)
    with SftpStorage(config) as storage, pytest.raises(StorageError, match="127.0.0.1:1"):
        storage.stat("g/a")


def test_default_ssh_config_is_honoured(sshd: Sshd, make_config: MakeConfig, isolated_home: Path) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        f"Host lab\n    HostName 127.0.0.1\n    Port {sshd.port}\n    IdentityFile {sshd.client_key}\n"
    )
    with SftpStorage(make_config(host="lab", port=None, key_filename=None)) as storage:
        assert storage.stat("nothing") is None


# ---- network faults -----------------------------------------------------------------------


def test_cut_mid_transfer_leaves_no_file_and_the_retry_after_healing_archives_it(
    sshd: Sshd, proxy: TcpProxy, make_config: MakeConfig, archive: Path, tmp_path: Path
) -> None:
    local, size, sha = write_file(tmp_path / "big.hdf5", 3_000_000)
    # A short operation timeout also bounds the retrying (and the test's run time).
    with SftpStorage(make_config(port=proxy.port, operation_timeout=2.0)) as storage:
        assert storage.stat("g/big.hdf5") is None  # connected
        proxy.cut_after(1_000_000)  # then refuse until healed: every retry fails too
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            storage.put(local, "g/big.hdf5", size=size, sha256=sha)
        assert caught.value.transient
        assert f"127.0.0.1:{proxy.port}" in str(caught.value)
        assert proxy.accepted >= 2  # it did retry, with new connections
        assert time.monotonic() - started < 15  # bounded
        assert proxy.cut_event.is_set()
        assert not (archive / "g/big.hdf5").exists()
        partial = list((archive / "g").iterdir())
        assert partial  # the temporary file of the cut attempt (it was opened before the cut)
        assert all(p.name.startswith(".big.hdf5.pdrflow-") and p.name.endswith(".part") for p in partial)
        assert sum(p.stat().st_size for p in partial) < size  # the cut really was mid-transfer

        proxy.heal()
        storage.put(local, "g/big.hdf5", size=size, sha256=sha)
        assert (archive / "g/big.hdf5").read_bytes() == local.read_bytes()
        assert leftovers(archive) == []  # the abandoned partial file was removed once the link was back


def test_a_drop_is_retried_transparently_on_a_new_connection(
    sshd: Sshd, proxy: TcpProxy, make_config: MakeConfig, archive: Path, tmp_path: Path
) -> None:
    local, size, sha = write_file(tmp_path / "big.hdf5", 2_000_000)
    with SftpStorage(make_config(port=proxy.port)) as storage:
        proxy.cut_after(700_000)

        def heal_after_the_cut() -> None:
            proxy.cut_event.wait(10)
            time.sleep(0.2)
            proxy.heal()

        healer = threading.Thread(target=heal_after_the_cut)
        healer.start()
        storage.put(local, "g/big.hdf5", size=size, sha256=sha)
        healer.join()
        assert proxy.cut_event.is_set() and proxy.accepted >= 2
    assert (archive / "g/big.hdf5").read_bytes() == local.read_bytes()
    assert leftovers(archive) == []  # the cut attempt's partial file was removed by the retry


@pytest.mark.parametrize("many", [False, True], ids=["put", "put_many"])
def test_a_connection_lost_right_after_the_server_created_the_temporary_leaves_nothing(
    storage: SftpStorage, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    """The file is created on the real server, then the link dies before its handle is used: the window in
    which a killed sshd left a stray ``.part`` in the fault matrix. The retry must remove it."""
    items = model_outputs(tmp_path / "staged")
    victim = "jerg_23.smli" if many else "pdrstruct_s.hdf5"
    real_open = SftpSession.open
    lost: list[str] = []

    def open_then_lose_the_link(self: SftpSession, path: str, *args: Any, **kwargs: Any) -> bytes:
        handle = real_open(self, path, *args, **kwargs)
        if not lost and path.rsplit("/", 1)[-1].startswith(f".{victim}.pdrflow-"):
            lost.append(path)
            self.channel.get_transport().close()  # the server now holds the created file
            raise EOFError("connection lost")
        return handle

    monkeypatch.setattr(SftpSession, "open", open_then_lose_the_link)
    if many:
        storage.put_many(items)
    else:
        local, path, size, sha = next(item for item in items if item[1].endswith(victim))
        storage.put(local, path, size=size, sha256=sha)
        items = [(local, path, size, sha)]
    assert lost, "the fault was not injected"
    for local, path, _, _ in items:
        assert (archive / path).read_bytes() == local.read_bytes()
    assert leftovers(archive) == []


def test_a_silent_server_times_out_instead_of_hanging(
    sshd: Sshd, proxy: TcpProxy, make_config: MakeConfig, tmp_path: Path
) -> None:
    with SftpStorage(make_config(port=proxy.port, operation_timeout=1.0)) as storage:
        assert storage.stat("x") is None
        proxy.delay = 30.0  # the server "stops answering"
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            storage.stat("x")
        assert caught.value.transient
        assert "no answer within 1 s" in str(caught.value)
        assert time.monotonic() - started < 5
        proxy.delay = 0.0
        proxy.cut_all()


def test_sshd_restart_during_uploads_is_survived(make_config: MakeConfig, tmp_path: Path, archive: Path) -> None:
    with Sshd(workdir=tmp_path / "own-sshd") as server:
        known = server.write_known_hosts(tmp_path / "own_known_hosts")
        items = model_outputs(tmp_path / "staged")
        config = make_config(port=server.port, known_hosts=known, key_filename=server.client_key)
        with SftpStorage(config) as storage:
            storage.put_many(items[:5])
            server.kill()  # crash: the listener and the live connection die
            restarter = threading.Timer(0.8, server.start)
            restarter.start()
            started = time.monotonic()
            storage.put_many(items)  # refused while down, then reconnects
            restarter.join()
            assert time.monotonic() - started >= 0.8
    for local, path, _, _ in items:
        assert (archive / path).read_bytes() == local.read_bytes()
    assert leftovers(archive) == []


def test_server_down_for_good_fails_with_a_transient_error(sshd: Sshd, make_config: MakeConfig, tmp_path: Path) -> None:
    # A port bound and never listening refuses every connection, and no other test's server can take it over
    # (a stopped sshd's port could be: one CI run met another test's sshd there, "host key has CHANGED").
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        known = sshd.write_known_hosts(tmp_path / "own_known_hosts", port)
        config = make_config(port=port, known_hosts=known, operation_timeout=1.0)
        with SftpStorage(config) as storage, pytest.raises(StorageError) as caught:
            storage.stat("x")
    assert caught.value.transient
    assert f"connection refused connecting to 127.0.0.1:{port}" in str(caught.value)


def test_several_files_in_flight_beat_one_by_one_at_20ms_rtt(
    sshd: Sshd, proxy: TcpProxy, make_config: MakeConfig, archive: Path, tmp_path: Path
) -> None:
    items = [(p, f"g/{p.name}", s, h) for p, s, h in (write_file(tmp_path / f"f{i}", 3000) for i in range(24))]
    proxy.delay = 0.010
    with SftpStorage(make_config(port=proxy.port, files_in_flight=8)) as storage:
        storage.stat("warm-up")  # connect first: only the uploads are timed
        started = time.monotonic()
        storage.put_many(items)
        elapsed = time.monotonic() - started
    # One by one, each new file costs at least 4 round trips (stat, open, write+close, rename):
    # 24 x 4 x 20 ms = 1.9 s. Eight in flight need about a quarter of that.
    assert elapsed < 1.0, elapsed
    for local, path, _, _ in items:
        assert (archive / path).read_bytes() == local.read_bytes()


# ---- persistent server-side failures ------------------------------------------------------


def test_permission_denied(
    sshd: Sshd, user: SystemUser, make_config: MakeConfig, tmp_path: Path, public_dir: Path
) -> None:
    locked = public_dir / "locked"
    (locked / "g").mkdir(parents=True)  # root-owned, 0755: the user may look but not write
    local, size, sha = write_file(tmp_path / "a", 1000)
    with SftpStorage(make_config(username=user.name, root=str(locked))) as storage:
        with pytest.raises(StorageError) as caught:
            storage.put(local, "g/a", size=size, sha256=sha)
        assert not caught.value.transient
        assert str(caught.value) == f"permission denied creating {locked}/g/a on 127.0.0.1:{sshd.port}"
        with pytest.raises(StorageError) as caught:
            storage.put_many([(local, "new/a", size, sha), (local, "new/b", size, sha)])
        assert not caught.value.transient
        assert f"permission denied creating directory {locked}/new on 127.0.0.1:{sshd.port}" == str(caught.value)
    assert list((locked / "g").iterdir()) == []


@pytest.fixture
def tiny_disk(archive: Path) -> Iterator[Path]:
    mount_point = archive / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
        timeout=10,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=10, check=True)


def test_disk_full(sshd: Sshd, storage: SftpStorage, tiny_disk: Path, tmp_path: Path) -> None:
    big, size, sha = write_file(tmp_path / "big.hdf5", 2_000_000)
    with pytest.raises(StorageError) as caught:
        storage.put(big, "small/g/big.hdf5", size=size, sha256=sha)
    assert not caught.value.transient
    message = str(caught.value)
    assert message.startswith("no space left on device")
    assert f"writing {tiny_disk}/g/big.hdf5 on 127.0.0.1:{sshd.port}" in message
    assert list((tiny_disk / "g").iterdir()) == []  # neither the final file nor the partial one
    small, size, sha = write_file(tmp_path / "small", 10_000)
    storage.put(small, "small/g/small", size=size, sha256=sha)  # the space came back
    assert (tiny_disk / "g/small").read_bytes() == small.read_bytes()


def test_read_only_file_system(sshd: Sshd, storage: SftpStorage, archive: Path, tmp_path: Path) -> None:
    target = archive / "ro"
    (target / "g").mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(target), str(target)], check=False, capture_output=True, timeout=10
    )
    if mounted.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True, timeout=10)
        local, size, sha = write_file(tmp_path / "a", 1000)
        with pytest.raises(StorageError) as caught:
            storage.put(local, "ro/g/a", size=size, sha256=sha)
        assert not caught.value.transient
        assert str(caught.value).startswith("read-only file system creating")
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=10, check=True)
