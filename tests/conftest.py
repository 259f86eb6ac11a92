from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write_null_home
from services.cluster_box import ClusterBox, start_cluster_box
from services.databases import DatabaseServer, remove_server, start_server
from services.marks import MARKS_VARIABLE
from services.sshd import Sshd

# Test selection (`./scripts/test -m "not services"` is the quick loop while editing): one table.
# services: needs a real server (sshd, PostgreSQL, MariaDB, SLURM, Chromium); slurm: the SLURM cluster;
# slow: builds and runs whole grids for a minute or more. Fixtures imply marks; whole modules are listed.
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "sshd": ("services",), "mariadb": ("services",), "postgres": ("services",), "servers": ("services",),
    "browser": ("services",), "slurm": ("services", "slurm"), "box": ("services", "slurm"),
    "ledger_server": ("services",), "slurm_elsewhere": ("services", "slurm"),
}
MODULE_MARKS: dict[str, tuple[str, ...]] = {
    "test_slurm.py": ("services", "slurm", "slow"), "test_ledger_databases.py": ("services",),
    "test_sftp_e2e.py": ("services",), "test_sftp_storage.py": ("services",), "test_sftp_download.py": ("services",),
    "test_report.py": ("slow",), "test_export.py": ("slow",), "test_quickstart.py": ("slow",),
    "test_notebook.py": ("slow",), "test_fault_matrix.py": ("slow",), "test_budgets.py": ("services", "slow"),
    "test_multinode.py": ("services", "slurm", "slow"),
    "test_multinode_faults.py": ("services", "slurm", "slow"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(MODULE_MARKS.get(item.path.name, ()))
        for fixture in getattr(item, "fixturenames", ()):
            names.update(FIXTURE_MARKS.get(fixture, ()))
        for name in sorted(names - {mark.name for mark in item.iter_markers()}):
            item.add_marker(name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test (module-scoped servers too); read by tests/services/marks.py.
    os.environ[MARKS_VARIABLE] = ",".join(mark.name for mark in item.iter_markers())


@pytest.fixture(scope="session")
def null_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_null_home(tmp_path_factory.mktemp("null-kosma-home"))


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory a normal user can reach (pytest's tmp_path lives below a 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="pdrflow-public-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    """A real sshd on loopback, one per test module; it takes keys and passwords (each module makes its own users).

    Its files live in a directory of their own below /tmp, not in pytest's 0700 tree: a normal user must read them.
    """
    server = Sshd(password_authentication=True)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def box() -> Iterator[ClusterBox]:
    """A SLURM cluster of three nodes on this machine (tests/services/cluster_box.py), one per test module."""
    cluster = start_cluster_box(3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def ledger_server(box: ClusterBox) -> Iterator[DatabaseServer]:
    """PostgreSQL on the box's login node, reachable from every node (the bridge address, password login)."""
    server = start_server("postgresql", address=box.login_address)
    yield server
    remove_server(server)


# Under pytest-xdist (./scripts/test) tests are spread one by one over the workers, except these
# modules, each of which runs on one worker, its tests one after another: the SLURM tests share the
# machine's munged and one node's CPUs and time limits; the report tests share one computed grid.
ONE_WORKER_MODULES = frozenset({"test_slurm.py", "test_report.py", "test_export.py", "test_multinode.py",
                                "test_multinode_faults.py"})

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # plain pytest, no workers
    pass
else:

    class _OneWorkerModules(LoadScopeScheduling):
        """xdist's scope scheduling with a scope per test, but one per module in ``ONE_WORKER_MODULES``.

        Not ``--dist loadgroup``: xdist 3.8 marks groups by rewriting ``item._nodeid``, which pytest 9 no
        longer reads, so its groups silently fall apart."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            for shared in ("test_security.py", "test_secret_paths.py"):
                if module.endswith(shared) and "slurm" in nodeid:
                    return module.replace(shared, "test_slurm.py")  # with the other SLURM tests
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else nodeid

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
        return _OneWorkerModules(config, log) if config.getvalue("dist") == "load" else None
