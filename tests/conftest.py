from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the marks into work units
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup``, tests run in parallel except the SLURM ones: those share
    the machine's munged and one node's CPUs and time limits, so they run one after another on one worker."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
