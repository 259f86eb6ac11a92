"""Keeps the ``services`` and ``slurm`` markers honest: a real server started by a test that is not
marked for it fails that test, so ``-m "not services"`` never starts one behind the user's back."""

from __future__ import annotations

import os

MARKS_VARIABLE = "PDRFLOW_TEST_MARKS"  # set by tests/conftest.py for the test being set up or run


def require_marked(service: str, mark: str = "services") -> None:
    marks = os.environ.get(MARKS_VARIABLE)
    if marks is not None and mark not in marks.split(","):
        raise RuntimeError(f"this test starts {service} but is not marked {mark!r}: add it to the table in "
                           "tests/conftest.py or mark it with @pytest.mark." + mark)
