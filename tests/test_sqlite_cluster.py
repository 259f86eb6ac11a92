"""An SQLite ledger only where one host writes it (issue 16): the filesystem under a path, WAL never on a
network filesystem (a real sshfs mount over the test sshd), and the preflight refusing a SLURM partition
or an allocation that spans other hosts (a real slurmctld), before any sbatch or ledger row."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import base_config, cli, ledger_rows, privileged, status, umount, write_config
from services.slurm import Slurm, start_slurm
from services.sshd import Sshd

from pdrflow.config import load_config
from pdrflow.ledger import Ledger
from pdrflow.ledger.filesystems import filesystem_type, is_network_filesystem
from pdrflow.ledger.ledger import make_engine
from pdrflow.preflight import PreflightFailed, check_sqlite_cluster

REMOTE_NODE = ("remote1", "198.18.0.50")  # TEST-NET-2: an address no host here has


def findmnt_type(path: Path) -> str:
    """util-linux's answer for the filesystem type at ``path`` (of several mounts on one point, the last: on top)."""
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split()[-1]


def journal_mode(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def one_model(tmp_path: Path, home: Path, database: Path, **cluster: object) -> Path:
    config = base_config(tmp_path, home=home, cluster={"kind": "local", "n_workers": 1, **cluster})
    config["grid"].update(density=[1.0e3], fuv=[10.0])
    config["database"]["url"] = f"sqlite:///{database}"
    if cluster.get("kind") not in (None, "local"):
        config["cluster"].pop("n_workers")
    return write_config(tmp_path / "run.yaml", config)


# ---- the filesystem under a path ------------------------------------------------------------------


def test_filesystem_type_agrees_with_findmnt(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/"), Path("/proc/self"), Path("/dev/shm")):
        assert filesystem_type(path) == findmnt_type(path), path
    # A file not created yet: the filesystem of its nearest existing parent.
    assert filesystem_type(tmp_path / "not" / "yet" / "ledger.sqlite") == findmnt_type(tmp_path)
    assert not is_network_filesystem(tmp_path)


def test_a_fresh_tmpfs_mount_with_a_space_in_its_name_is_found(tmp_path: Path) -> None:
    mount_point = tmp_path / "a mount"  # mountinfo writes it as a\040mount
    mount_point.mkdir()
    privileged("mount", "-t", "tmpfs", "-o", "size=1m", "pdrflow-test", str(mount_point))
    try:
        assert findmnt_type(mount_point) == "tmpfs"
        assert filesystem_type(mount_point / "ledger.sqlite") == "tmpfs"
        assert filesystem_type(mount_point.parent) == findmnt_type(tmp_path)  # beside the mount: not it
    finally:
        umount(mount_point)


# ---- a real network filesystem: sshfs over the test sshd ------------------------------------------


def require_sshfs() -> None:
    """In CI a missing sshfs fails (scripts/test installs it); elsewhere a skip."""
    if shutil.which("sshfs") and Path("/dev/fuse").exists():
        return
    message = "sshfs or /dev/fuse missing (Debian package sshfs)"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    pytest.skip(message)


@pytest.fixture
def sshfs_mount(tmp_path: Path, sshd: Sshd) -> Iterator[tuple[Path, Path]]:
    """(mount point, the directory it shows): a real fuse.sshfs mount of a directory served by the test sshd."""
    require_sshfs()
    served = tmp_path / "served"
    served.mkdir()
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    privileged("sshfs", "-p", str(sshd.port), "-o", f"IdentityFile={sshd.client_key}",
               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               f"root@{sshd.host}:{served}", str(mount_point))
    try:
        yield mount_point, served
    finally:
        umount(mount_point)


def test_sshfs_is_a_network_filesystem(sshfs_mount: tuple[Path, Path]) -> None:
    mount_point, _ = sshfs_mount
    assert findmnt_type(mount_point) == "fuse.sshfs"
    assert filesystem_type(mount_point / "ledger.sqlite") == "fuse.sshfs"
    assert is_network_filesystem(mount_point / "ledger.sqlite")


def test_sqlite_ledger_on_sshfs_never_uses_wal(
    tmp_path: Path, null_home: Path, sshfs_mount: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    mount_point, served = sshfs_mount
    db = mount_point / "ledger.sqlite"
    # One engine, several connections: one warning.
    with caplog.at_level(logging.WARNING, logger="pdrflow"):
        engine = make_engine(f"sqlite:///{db}")
        connections = [engine.connect() for _ in range(3)]
        for connection in connections:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
            connection.close()
        engine.dispose()
    warnings = [r.getMessage() for r in caplog.records if "network filesystem" in r.getMessage()]
    assert len(warnings) == 1 and "(fuse.sshfs): journal_mode=DELETE, not WAL" in warnings[0]
    db.unlink()

    # A whole grid, cluster local: it runs, and the server never sees a -wal or -shm file.
    seen: set[str] = set()
    done_event = threading.Event()

    def watch() -> None:
        while not done_event.is_set():
            seen.update(name for name in os.listdir(served) if name.endswith(("-wal", "-shm")))
            done_event.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = cli("run", str(one_model(tmp_path, null_home, db)))
    finally:
        done_event.set()
        watcher.join(10)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is on a network filesystem (fuse.sshfs): journal_mode=DELETE, not WAL" in done.stderr
    assert status(tmp_path / "run.yaml")["counts"] == {"archived": 1}
    assert journal_mode(served / "ledger.sqlite") == "delete"
    assert seen == set() and not [p for p in served.iterdir() if p.name.endswith(("-wal", "-shm"))]


def test_sqlite_ledger_on_a_local_filesystem_keeps_wal(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    Ledger(f"sqlite:///{db}").close()
    assert not is_network_filesystem(db)
    assert journal_mode(db) == "wal"


def test_slurm_or_allocation_with_the_ledger_on_sshfs_is_refused(
    tmp_path: Path, null_home: Path, sshfs_mount: tuple[Path, Path]
) -> None:
    mount_point, _ = sshfs_mount
    config = load_config(one_model(tmp_path, null_home, mount_point / "ledger.sqlite", kind="allocation"))
    ledger = Ledger(config.database.sqlalchemy_url())
    try:
        with pytest.raises(PreflightFailed) as refused:
            check_sqlite_cluster(config, ledger)  # one node (no SLURM_NNODES): the filesystem alone refuses it
    finally:
        ledger.close()
    assert f"the SQLite ledger {mount_point / 'ledger.sqlite'} is on a network filesystem (fuse.sshfs) and " \
           "cluster.kind: allocation runs workers on cluster nodes" in str(refused.value)
    assert "use PostgreSQL or MariaDB" in str(refused.value)


# ---- the preflight: which hosts the workers would run on ------------------------------------------


@pytest.fixture(scope="module")
def slurm_elsewhere() -> Iterator[Slurm]:
    """A real slurmctld whose partition has a node on another host (configured, never up)."""
    cluster = start_slurm(extra_nodes=[REMOTE_NODE])
    yield cluster
    cluster.stop()


def slurm_cluster_config(tmp_path: Path) -> dict[str, object]:
    return {"kind": "slurm", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00",
            "interface": "lo", "max_jobs": 1, "log_directory": str(tmp_path / "worker-logs")}


def test_sqlite_with_a_partition_on_other_hosts_is_refused_before_any_sbatch(
    tmp_path: Path, null_home: Path, slurm_elsewhere: Slurm
) -> None:
    db = tmp_path / "ledger.sqlite"
    config = one_model(tmp_path, null_home, db, **slurm_cluster_config(tmp_path))
    done = cli("run", str(config), env={"SLURM_CONF": str(slurm_elsewhere.conf)}, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("pdrflow: error:"))
    assert line.startswith("pdrflow: error: preflight: cluster.kind: slurm puts workers on the nodes of partition "
                           "debug, on other hosts than this one: remote1 at 198.18.0.50, and the ledger is the "
                           f"SQLite file {db}; an SQLite ledger is safe for the processes of one host only: use "
                           "PostgreSQL or MariaDB (database.url: postgresql+psycopg://"), line
    assert line.endswith('see the user guide\'s section "SQLite and clusters" (docs/user-guide.md); nothing was run')
    assert slurm_elsewhere.jobs() == []  # no sbatch
    tables = [name for (name,) in ledger_rows(db, "select name from sqlite_master where type='table'")]
    assert "worker_jobs" in tables
    rows = {table: ledger_rows(db, f"select count(*) from {table}")[0][0]  # table names from sqlite_master
            for table in tables if table != "alembic_version"}
    assert set(rows.values()) == {0}, rows  # the schema only: no grid, job, lease or worker job
    assert not (tmp_path / "archive").exists()
    assert not (tmp_path / "worker-logs").exists()


def test_sqlite_with_an_allocation_of_two_nodes_is_refused(
    tmp_path: Path, null_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(one_model(tmp_path, null_home, tmp_path / "ledger.sqlite", kind="allocation"))
    ledger = Ledger(config.database.sqlalchemy_url())
    try:
        monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
        monkeypatch.setenv("SLURM_NNODES", "1")
        placement = check_sqlite_cluster(config, ledger)
        assert placement is not None and placement.what == "one host: this allocation has one node"
        monkeypatch.setenv("SLURM_NNODES", "2")
        monkeypatch.delenv("SLURM_JOB_NUM_NODES")
        with pytest.raises(PreflightFailed) as refused:
            check_sqlite_cluster(config, ledger)
    finally:
        ledger.close()
    assert str(refused.value).startswith("preflight: cluster.kind: allocation runs workers on the 2 nodes of this "
                                         "allocation, and the ledger is the SQLite file ")
    assert "use PostgreSQL or MariaDB" in str(refused.value)


@pytest.fixture
def slurm() -> Iterator[Slurm]:
    """The single-node SLURM of tests/test_slurm.py (its node is localhost at 127.0.0.1)."""
    cluster = start_slurm()
    yield cluster
    cluster.stop()


def test_sqlite_with_a_partition_on_this_host_only_is_allowed(
    tmp_path: Path, null_home: Path, slurm: Slurm, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    config = load_config(one_model(tmp_path, null_home, tmp_path / "ledger.sqlite", **slurm_cluster_config(tmp_path)))
    ledger = Ledger(config.database.sqlalchemy_url())
    try:
        with caplog.at_level(logging.INFO, logger="pdrflow"):
            placement = check_sqlite_cluster(config, ledger)
    finally:
        ledger.close()
    assert placement is not None and placement.one_host
    assert placement.what == "one host: every node of partition debug is this host (localhost at 127.0.0.1)"
    assert any("one host: every node of partition debug" in r.getMessage() for r in caplog.records)
    assert slurm.jobs() == []
