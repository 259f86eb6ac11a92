"""Job states, their transitions, how they look, and the kinds of driver events: written once here.

Standard library only, so the light modules (``status``, the dashboard page, the CLI) import it
without paying for SQLAlchemy; the ledger's tables store these values.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """A job's state in the ledger. A state is its one entry here: its value, how it looks (colour for
    the dashboard, report and notebook: colour-blind safe, Okabe-Ito; a rich style for the terminal; a
    short label for the report's map cells), whether it is a failure, and the states it may go to. The
    members' order is the display order everywhere."""

    colour: str
    style: str
    short: str
    is_failure: bool
    next_states: tuple[str, ...]

    # The defaults only let a type checker accept JobState("pending"), a lookup that never calls __new__.
    def __new__(cls, value: str, colour: str = "", style: str = "", short: str = "", is_failure: bool = False,
                next_states: tuple[str, ...] = ()) -> JobState:
        member = str.__new__(cls, value)
        member._value_ = value
        member.colour, member.style, member.short = colour, style, short
        member.is_failure, member.next_states = is_failure, next_states
        return member

    # "→ pending" means: run the model again (interrupted run, or staged outputs lost before archival).
    # "archived → failed_storage" is taken only by `pdrflow verify --repair` (REPAIR_TRANSITIONS):
    # archived files found missing or changed; the job is archived again or recomputed.
    PENDING = "pending", "#d9d9d9", "white", "pend", False, ("running",)
    RUNNING = "running", "#56b4e9", "blue", "run", False, ("computed", "failed_model", "pending")
    COMPUTED = "computed", "#f0e442", "yellow", "comp", False, ("archived", "failed_storage", "pending")
    ARCHIVED = "archived", "#009e73", "green", "ok", False, ("failed_storage",)
    FAILED_MODEL = "failed_model", "#d55e00", "red", "FAIL\nmodel", True, ("pending",)
    FAILED_STORAGE = "failed_storage", "#cc79a7", "magenta", "FAIL\nstorage", True, (
        "archived", "failed_storage", "pending")

    @property
    def failed(self) -> bool:
        return self.is_failure


# Derived from the members above, never written a second time.
STATES: tuple[JobState, ...] = tuple(JobState)
FAILED_STATES: frozenset[JobState] = frozenset(state for state in JobState if state.is_failure)
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    state: frozenset(JobState(name) for name in state.next_states) for state in JobState}
STATE_COLOURS: dict[JobState, str] = {state: state.colour for state in JobState}
STATE_STYLES: dict[JobState, str] = {state: state.style for state in JobState}
STATE_SHORT: dict[JobState, str] = {state: state.short for state in JobState}
# Allowed above, but refused to every ledger call except the repair's: a late archival failure
# (its commit's acknowledgement lost) must never turn a job that is archived into failed_storage.
REPAIR_TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset({(JobState.ARCHIVED, JobState.FAILED_STORAGE)})


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
