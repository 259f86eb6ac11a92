from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write_null_home
from services.sshd import Sshd


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


# Under pytest-xdist (./scripts/test) tests are spread one by one over the workers, except these
# modules, each of which runs on one worker, its tests one after another: the SLURM tests share the
# machine's munged and one node's CPUs and time limits; the report tests share one computed grid.
ONE_WORKER_MODULES = frozenset({"test_slurm.py", "test_report.py", "test_export.py"})

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
            if module.endswith("test_security.py") and "slurm" in nodeid:
                return module.replace("test_security.py", "test_slurm.py")  # with the other SLURM tests
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else nodeid

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
        return _OneWorkerModules(config, log) if config.getvalue("dist") == "load" else None
