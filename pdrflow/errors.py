"""Exceptions that cross module (and process) boundaries.

Exceptions raised inside Dask tasks are pickled back to the driver, so each keeps its
constructor arguments in ``args`` (the default pickling path) and nothing else.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2."""


class LedgerError(Exception):
    """The ledger refused an operation (illegal transition, schema mismatch, lease held)."""


class ModelFailed(Exception):
    """A KOSMA-tau step exited non-zero or timed out; the job is ``failed_model``."""

    def __init__(self, job_id: int, reason: str) -> None:
        super().__init__(job_id, reason)
        self.job_id = job_id
        self.reason = reason

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.reason}"


class StorageFailed(Exception):
    """The archival of a job failed; the job is ``failed_storage`` and may be retried."""

    def __init__(self, job_id: int, reason: str, staged_missing: bool = False, permanent: bool = False) -> None:
        super().__init__(job_id, reason, staged_missing, permanent)
        self.job_id = job_id
        self.reason = reason
        self.staged_missing = staged_missing  # True: only a model rerun can recover the job
        # True: retrying cannot help until the user acts (foreign files at the archive paths)
        self.permanent = permanent

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.reason}"


def shown(value: object, limit: int = 60) -> str:
    """A short repr of a user-supplied value for an error message.

    Bounded in length and depth: a hostile config (a 1 MB string, a YAML alias bomb) must
    give a one-line message quickly, not a repr that takes minutes or fills the terminal.
    """
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    short.maxlevel = 2
    text = short.repr(value)
    return text if len(text) <= limit + 10 else text[: limit + 7] + "..."
