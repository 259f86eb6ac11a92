"""Archived files and the directories pdrflow creates have exactly ``storage.file_mode`` / ``dir_mode``.

Whatever the umask of the process that writes them (the driver's workers for the local backend,
the server's sftp process for SFTP): both backends set the modes explicitly (fchmod / FSETSTAT
on the temporary file before its rename, chmod after mkdir), so the tests run every backend under
a umask of 0o000 (which would leave a file at open()'s mode) and 0o077 (which would strip the
group). Directories that existed before are left as they were. Unsafe modes are refused when
the config is read (exit 2, one line).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import base_config, cli, files_under, write_config
from services.sshd import Sshd

from pdrflow.cli import main
from pdrflow.config import LocalStorageConfig, SftpStorageConfig, load_config
from pdrflow.storage import open_storage
from pdrflow.storage.base import sha256_file

UMASKS = [0o000, 0o077]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask of this process (and of every process it starts meanwhile)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def staged(directory: Path, names: list[str]) -> list[tuple[Path, str, int, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for index, name in enumerate(names):
        local = directory / name.replace("/", "_")
        local.write_bytes(os.urandom(1000 + index))
        items.append((local, name, *sha256_file(local)))
    return items


def modes_under(root: Path) -> tuple[set[int], set[int]]:
    """(modes of the files, modes of the directories) below ``root``, ``root`` itself not included."""
    files = {mode(p) for p in root.rglob("*") if p.is_file()}
    directories = {mode(p) for p in root.rglob("*") if p.is_dir()}
    return files, directories


TEAM_GID = 54321  # a group's archive: its top directory is setgid to hand the group down


def team_directory(root: Path) -> Path:
    team = root / "team"
    team.mkdir(parents=True)
    os.chown(team, -1, TEAM_GID)
    team.chmod(0o2750)
    return team


def check_team(team: Path, file_mode: int, dir_mode: int) -> None:
    """Below a setgid directory: new directories keep the inherited setgid bit, everything has the group."""
    below = list(team.rglob("*"))
    assert {mode(p) for p in below if p.is_dir()} == {dir_mode | stat.S_ISGID}
    assert {mode(p) for p in below if p.is_file()} == {file_mode}
    assert {p.stat().st_gid for p in below} == {TEAM_GID}
    assert mode(team) == 0o2750


# ---- local ------------------------------------------------------------------------------------


def _local_config(tmp_path: Path, **modes: str | None) -> LocalStorageConfig:
    config = base_config(tmp_path, home=None)
    config["storage"].update(modes)
    loaded = load_config(write_config(tmp_path / "run.yaml", config)).storage
    assert isinstance(loaded, LocalStorageConfig)
    return loaded


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_local_archive_files_and_new_directories_have_the_configured_modes(tmp_path: Path, mask: int) -> None:
    config = _local_config(tmp_path)
    assert (config.file_mode, config.dir_mode) == ("0640", "0750")  # the shipped defaults
    root = config.root
    existing = root / "shared"
    existing.mkdir(parents=True)
    existing.chmod(0o751)
    team = team_directory(root)
    items = staged(tmp_path / "staged", ["g/pdrgrid/a.hdf5", "g/pdrgrid/b.hdf5", "g/oniongrid/deep/c.out"])
    with umask(mask), open_storage(config) as storage:
        storage.put(items[0][0], "g/single/one.dat", size=items[0][2], sha256=items[0][3])
        storage.put_many(items)
        storage.put(items[1][0], "shared/kept.dat", size=items[1][2], sha256=items[1][3])
        storage.rename("g/single/one.dat", "g/moved/here/one.dat")
        storage.put(items[2][0], "team/g/x/c.out", size=items[2][2], sha256=items[2][3])
    check_team(team, 0o640, 0o750)
    files, directories = modes_under(root / "g")
    assert len(files) == 1 and len(directories) == 1
    assert files == {0o640}, [f"{m:o}" for m in files]
    assert directories == {0o750}, [f"{m:o}" for m in directories]
    assert mode(existing) == 0o751  # there before: not pdrflow's to change
    assert mode(existing / "kept.dat") == 0o640
    assert sorted(p.name for p in files_under(root)) == ["a.hdf5", "b.hdf5", "c.out", "c.out", "kept.dat", "one.dat"]


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_local_modes_are_configurable(tmp_path: Path, mask: int) -> None:
    """A group that shares its archive widely: "0664" / "2775" are refused (setgid), "0644" / "0755" taken."""
    config = _local_config(tmp_path, file_mode="0644", dir_mode="0755")
    items = staged(tmp_path / "staged", ["g/x/a.dat", "g/y/b.dat"])
    with umask(mask), open_storage(config) as storage:
        storage.put_many(items)
    assert modes_under(config.root / "g") == ({0o644}, {0o755})


def test_null_modes_leave_the_modes_to_the_umask(tmp_path: Path) -> None:
    config = _local_config(tmp_path, file_mode=None, dir_mode=None)
    items = staged(tmp_path / "staged", ["g/x/a.dat", "g/y/b.dat"])
    with umask(0o027), open_storage(config) as storage:
        storage.put_many(items)
    assert modes_under(config.root / "g") == ({0o640}, {0o750})  # 0666 and 0777 through the umask


def test_a_real_run_under_umask_077_archives_with_the_configured_modes(tmp_path: Path, null_home: Path) -> None:
    """The whole path: driver, LocalCluster workers, archival task - all started under umask 077."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", base_config(run_dir, home=null_home))
    with umask(0o077):
        done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    archive = run_dir / "archive"
    files, directories = modes_under(archive)
    assert len(files_under(archive)) > 20
    assert files == {0o640}, sorted(f"{m:o}" for m in files)
    assert directories == {0o750}, sorted(f"{m:o}" for m in directories)


# ---- SFTP: the server's umask is the one that counts ---------------------------------------------


@contextmanager
def sftp_server_with_umask(tmp_path: Path, mask: int) -> Iterator[Sshd]:
    """An sshd (and so its sftp processes) started under ``mask``."""
    server = Sshd(workdir=tmp_path / "sshd")
    with umask(mask):
        server.start()
    try:
        yield server
    finally:
        server.cleanup()


def _sftp_config(tmp_path: Path, server: Sshd, root: Path, **modes: str) -> SftpStorageConfig:
    storage = {"kind": "sftp", "host": server.host, "port": server.port, "username": "root", "root": str(root),
               "key_filename": str(server.client_key), "known_hosts": str(server.write_known_hosts(
                   tmp_path / "known_hosts")), "connect_timeout": 5, "operation_timeout": 10, **modes}
    config = base_config(tmp_path / "run", home=None, storage=storage)
    loaded = load_config(write_config(tmp_path / "sftp.yaml", config)).storage
    assert isinstance(loaded, SftpStorageConfig)
    return loaded


@pytest.mark.services
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_sftp_archive_files_and_new_directories_have_the_configured_modes(
    tmp_path: Path, mask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    root = tmp_path / "archive"
    existing = root / "shared"
    existing.mkdir(parents=True)
    existing.chmod(0o751)
    team = team_directory(root)
    items = staged(tmp_path / "staged", ["g/pdrgrid/a.hdf5", "g/pdrgrid/b.hdf5", "g/oniongrid/deep/c.out"])
    with sftp_server_with_umask(tmp_path, mask) as server:
        config = _sftp_config(tmp_path, server, root)
        assert (config.file_mode, config.dir_mode) == ("0640", "0750")  # the shipped defaults
        with open_storage(config) as storage:
            storage.put(items[0][0], "g/single/one.dat", size=items[0][2], sha256=items[0][3])
            storage.put_many(items)
            storage.put(items[1][0], "shared/kept.dat", size=items[1][2], sha256=items[1][3])
            storage.rename("g/single/one.dat", "g/moved/here/one.dat")
            storage.put(items[2][0], "team/g/x/c.out", size=items[2][2], sha256=items[2][3])
        config = _sftp_config(tmp_path, server, root, file_mode="0600", dir_mode="0700")
        with open_storage(config) as storage:
            storage.put(items[2][0], "other/x/c.out", size=items[2][2], sha256=items[2][3])
    assert modes_under(root / "g") == ({0o640}, {0o750})
    assert mode(existing) == 0o751  # there before: not pdrflow's to change
    assert mode(existing / "kept.dat") == 0o640
    assert modes_under(root / "other") == ({0o600}, {0o700})
    check_team(team, 0o640, 0o750)
    assert sorted(p.name for p in files_under(root)) == ["a.hdf5", "b.hdf5", "c.out", "c.out", "c.out", "kept.dat",
                                                         "one.dat"]


# ---- refused modes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("file_mode", "0666", "storage.file_mode: world write is refused"),
        ("file_mode", "4755", "storage.file_mode: a setuid, setgid or sticky bit is refused"),
        ("file_mode", "abc", 'storage.file_mode: must be an octal mode like "0640"'),
        ("file_mode", 416, 'storage.file_mode: write the mode as a quoted octal string like "0640"'),
        ("file_mode", "0440", "storage.file_mode: must give the owner at least 0600"),
        ("dir_mode", "0777", "storage.dir_mode: world write is refused"),
        ("dir_mode", "2750", "storage.dir_mode: a setuid, setgid or sticky bit is refused"),
        ("dir_mode", "0640", "storage.dir_mode: must give the owner at least 0700"),
    ],
)
@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_unsafe_or_malformed_modes_exit_2_with_one_line(
    tmp_path: Path, null_home: Path, kind: str, key: str, value: object, message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    storage = {"kind": "local", "root": str(run_dir / "archive")} if kind == "local" else {
        "kind": "sftp", "host": "127.0.0.1", "root": "/srv/archive"}
    config = write_config(tmp_path / "bad.yaml", base_config(run_dir, home=null_home, storage={**storage,
                                                                                                key: value}))
    assert main(["run", str(config)]) == 2  # the CLI's entry point, in this process (fast)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert not run_dir.exists()


def test_a_world_writable_mode_through_the_real_command(tmp_path: Path, null_home: Path) -> None:
    run_dir = tmp_path / "run"
    config = base_config(run_dir, home=null_home)
    config["storage"]["file_mode"] = "0666"
    done = cli("run", str(write_config(tmp_path / "bad.yaml", config)), timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("pdrflow: error: storage.file_mode: world write is refused: every user of the machine "
                           "could change the archived files (got '0666')\n")
    assert done.stdout == ""
    assert not run_dir.exists()
