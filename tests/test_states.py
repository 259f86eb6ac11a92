"""One place for the job states: light to import, complete, and what every view draws."""

from __future__ import annotations

import json
import subprocess
import sys

from pdrflow.dashboard.page import COLOURS
from pdrflow.states import STATE_COLOURS, STATE_SHORT, STATE_STYLES, STATES, EventKind, JobState


def test_states_module_imports_no_third_party_library() -> None:
    probe = ("import sys, json, pdrflow.states; "
             "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                           check=True, timeout=60).stdout))
    assert not loaded & {"sqlalchemy", "dask", "distributed", "pydantic", "rich", "numpy", "yaml"}, loaded


def test_every_state_has_its_colour_style_and_label() -> None:
    for table in (STATE_COLOURS, STATE_STYLES, STATE_SHORT):
        assert set(table) == set(JobState)
    assert len(set(STATE_COLOURS.values())) == len(JobState)  # no two states look alike
    assert tuple(JobState) == STATES


def test_dashboard_draws_the_states_in_their_one_colour() -> None:
    for state in JobState:
        assert COLOURS[state.value] == STATE_COLOURS[state]


def test_report_map_uses_the_same_colours() -> None:
    from matplotlib.colors import to_hex

    from pdrflow.report import gridmap

    assert [to_hex(gridmap.STATE_COLOURS[s]) for s in gridmap.STATES] == [STATE_COLOURS[s] for s in JobState]


def test_events_that_end_a_job_name_its_ledger_state() -> None:
    assert EventKind.ARCHIVED.job_state is JobState.ARCHIVED
    assert EventKind.LOST.job_state is JobState.PENDING  # a lost run stays pending in the ledger
    assert EventKind.RETRY_ARCHIVE.job_state is None
