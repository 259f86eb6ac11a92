from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_null_home


@pytest.fixture(scope="session")
def null_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_null_home(tmp_path_factory.mktemp("null-kosma-home"))
