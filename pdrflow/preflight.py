"""The preflight: before the first model is submitted, can this run finish at all?

A run that cannot archive must not start a single model (issue 15): every model would run, and
every archival fail afterwards. So the driver checks, before it takes the grid's lease or writes
anything to the ledger, on every cluster kind:

- the ledger: reachable now and at this pdrflow's schema revision (the same check as opening it);
- the executables ``plan_run`` resolved and fingerprinted are still there and executable;
- the archive: a probe file written below ``<grid>/`` on the real backend the way an upload is
  written (temporary name, atomic rename, size and sha256 checked) and removed (``Storage.probe``).

A failure raises :class:`PreflightFailed` (a ``ConfigError``: the CLI prints it on one line and
exits 2); no job has changed state and no attempt is recorded.

On a cluster the workers archive from their nodes: the probe, made from the driver's host, proves
the archive itself writable (mount, permissions, space), not each node's view of it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import ConfigError, LedgerError

if TYPE_CHECKING:
    from .config import Config
    from .driver import Plan
    from .ledger import Ledger


class PreflightFailed(ConfigError):
    """A check before any model ran failed: nothing was computed, nothing recorded (exit 2)."""


def preflight(config: Config, plan: Plan, ledger: Ledger) -> None:
    """Raise PreflightFailed naming the first thing that would stop every model of the run."""
    check_ledger(config, ledger)
    check_executables(plan)
    check_archive(config)


def check_ledger(config: Config, ledger: Ledger) -> None:
    from sqlalchemy.exc import DBAPIError

    from .ledger.migrate import ensure_schema
    from .ledger.open import database_error

    try:
        # What opening the ledger checked, once more now (the caller may have opened it a while ago).
        ensure_schema(ledger.engine)
    except DBAPIError as exc:
        raise PreflightFailed(f"preflight: {database_error(config.database, exc)}; nothing was run") from None
    except LedgerError as exc:
        raise PreflightFailed(f"preflight: {exc}; nothing was run") from None


def check_executables(plan: Plan) -> None:
    """plan_run checked and hashed them; here only that they are still in place right before submission."""
    installation = plan.installation
    for key, path in (("pdr_executable", installation.pdr_executable),
                      ("onion_executable", installation.onion_executable)):
        if not path.is_file() or not os.access(path, os.X_OK):
            raise PreflightFailed(f"preflight: kosma_tau.{key}: {path} is gone or no longer executable; "
                                  "nothing was run")


def check_archive(config: Config) -> None:
    from .storage import StorageError, open_storage

    try:
        with open_storage(config.storage) as storage:
            storage.probe(config.grid.name)
    except (StorageError, OSError) as exc:  # OSError: a local failure outside the backend's own handling
        raise PreflightFailed(f"preflight: the archive cannot be written: {exc}; nothing was run") from None
