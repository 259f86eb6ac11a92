"""The ledger: every grid, model and job, their states, attempts and archived files."""

from .ledger import JobRef, Ledger, Registration
from .schema import AttemptKind, JobState

__all__ = ["AttemptKind", "JobRef", "JobState", "Ledger", "Registration"]
