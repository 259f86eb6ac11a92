"""The ledger: every grid, model and job, their states, attempts and archived files."""

from ..states import JobState
from .ledger import JobRef, Ledger, Registration
from .schema import AttemptKind

__all__ = ["AttemptKind", "JobRef", "JobState", "Ledger", "Registration"]
