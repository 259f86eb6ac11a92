"""Job states, their transitions, how they look, and the kinds of driver events: written once here.

Standard library only, so the light modules (``status``, the dashboard page, the CLI) import it
without paying for SQLAlchemy; the ledger's tables store these values.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """A job's state in the ledger; the members' order is the display order everywhere."""

    PENDING = "pending"
    RUNNING = "running"
    COMPUTED = "computed"
    ARCHIVED = "archived"
    FAILED_MODEL = "failed_model"
    FAILED_STORAGE = "failed_storage"

    @property
    def failed(self) -> bool:
        return self in FAILED_STATES

    @property
    def colour(self) -> str:
        return STATE_COLOURS[self]


STATES: tuple[JobState, ...] = tuple(JobState)
FAILED_STATES: frozenset[JobState] = frozenset({JobState.FAILED_MODEL, JobState.FAILED_STORAGE})

# The only transitions the ledger accepts. "→ pending" means: run the model again
# (interrupted run, or staged outputs lost before archival). "archived → failed_storage" is taken
# only by `pdrflow verify --repair` (REPAIR_TRANSITIONS): archived files found missing or changed;
# the driver then archives the job again from staged outputs still in scratch, else recomputes it.
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING}),
    JobState.RUNNING: frozenset({JobState.COMPUTED, JobState.FAILED_MODEL, JobState.PENDING}),
    JobState.COMPUTED: frozenset({JobState.ARCHIVED, JobState.FAILED_STORAGE, JobState.PENDING}),
    JobState.FAILED_STORAGE: frozenset({JobState.ARCHIVED, JobState.FAILED_STORAGE, JobState.PENDING}),
    JobState.FAILED_MODEL: frozenset({JobState.PENDING}),
    JobState.ARCHIVED: frozenset({JobState.FAILED_STORAGE}),
}
# Allowed above, but refused to every ledger call except the repair's: a late archival failure
# (its commit's acknowledgement lost) must never turn a job that is archived into failed_storage.
REPAIR_TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset({(JobState.ARCHIVED, JobState.FAILED_STORAGE)})

# One colour per state (colour-blind safe, Okabe-Ito) for the dashboard, the report and the notebook.
STATE_COLOURS: dict[JobState, str] = {
    JobState.PENDING: "#d9d9d9",
    JobState.RUNNING: "#56b4e9",
    JobState.COMPUTED: "#f0e442",
    JobState.ARCHIVED: "#009e73",
    JobState.FAILED_MODEL: "#d55e00",
    JobState.FAILED_STORAGE: "#cc79a7",
}
# The terminal has few colours: rich style names, chosen to read like the colours above.
STATE_STYLES: dict[JobState, str] = {
    JobState.PENDING: "white",
    JobState.RUNNING: "blue",
    JobState.COMPUTED: "yellow",
    JobState.ARCHIVED: "green",
    JobState.FAILED_MODEL: "red",
    JobState.FAILED_STORAGE: "magenta",
}
# Cell labels of the report's state map, where a full name does not fit.
STATE_SHORT: dict[JobState, str] = {
    JobState.PENDING: "pend",
    JobState.RUNNING: "run",
    JobState.COMPUTED: "comp",
    JobState.ARCHIVED: "ok",
    JobState.FAILED_MODEL: "FAIL\nmodel",
    JobState.FAILED_STORAGE: "FAIL\nstorage",
}


class EventKind(enum.StrEnum):
    """What the driver tells the CLI, the notebook and the log while a grid runs."""

    REGISTERED = "registered"  # the grid's models are in the ledger
    RESUMED = "resume"  # a stopped driver's grid was taken over
    DASHBOARD = "dashboard"  # the Dask dashboard's address
    GRID_PAGE = "grid_page"  # the pdrflow page in that dashboard
    ARCHIVED = "archived"
    FAILED_MODEL = "failed_model"
    FAILED_STORAGE = "failed_storage"  # archival failed for good (retries used up or permanent)
    RETRY_ARCHIVE = "retry_archive"  # archival failed; tried again after a backoff
    RERUN = "rerun"  # the model is computed again (run lost, or staged outputs gone)
    LOST = "lost"  # runs lost to dead workers too often: the job stays pending

    @property
    def job_state(self) -> JobState | None:
        """The ledger state a job is left in by this event, where the event ends the job's run."""
        return {EventKind.ARCHIVED: JobState.ARCHIVED, EventKind.FAILED_MODEL: JobState.FAILED_MODEL,
                EventKind.FAILED_STORAGE: JobState.FAILED_STORAGE, EventKind.LOST: JobState.PENDING}.get(self)
