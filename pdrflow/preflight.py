"""The preflight: before the first model is submitted, can this run finish at all?

A run that cannot archive must not start a single model (issue 15): every model would run, and
every archival fail afterwards. So the driver checks, before it takes the grid's lease or writes
anything to the ledger, on every cluster kind:

- the ledger: reachable now and at this pdrflow's schema revision (the same check as opening it);
- an SQLite ledger only where every writer is on one host: workers write the ledger themselves, and
  SQLite on a network filesystem or shared by several hosts corrupts it or fails (``check_sqlite_cluster``);
- the executables ``plan_run`` resolved and fingerprinted are still there and executable;
- the archive: a probe file written below ``<grid>/`` on the real backend the way an upload is
  written (temporary name, atomic rename, size and sha256 checked) and removed (``Storage.probe``).

A failure raises :class:`PreflightFailed` (a ``ConfigError``: the CLI prints it on one line and
exits 2); no job has changed state and no attempt is recorded.

On a cluster the workers archive from their nodes: the probe, made from the driver's host, proves
the archive itself writable (mount, permissions, space), not each node's view of it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .errors import ConfigError, LedgerError

if TYPE_CHECKING:
    from .cluster.placement import Placement
    from .config import Config
    from .ledger import Ledger
    from .plan import Plan


log = logging.getLogger("pdrflow")


class PreflightFailed(ConfigError):
    """A check before any model ran failed: nothing was computed, nothing recorded (exit 2)."""


def preflight(config: Config, plan: Plan, ledger: Ledger) -> None:
    """Raise PreflightFailed naming the first thing that would stop every model of the run."""
    check_ledger(config, ledger)
    check_sqlite_cluster(config, ledger)  # before the archive probe: a refused run leaves no grid directory
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


SQLITE_ADVICE = ("an SQLite ledger is safe for the processes of one host only: use PostgreSQL or MariaDB "
                 "(database.url: postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db), see the user "
                 "guide's section \"SQLite and clusters\" (docs/user-guide.md)")


def check_sqlite_cluster(config: Config, ledger: Ledger) -> Placement | None:
    """An SQLite ledger with workers that may run on other hosts, or on a network filesystem with a SLURM
    cluster, is refused. Returns where the workers run (None: not SQLite)."""
    if ledger.engine.dialect.name != "sqlite":
        return None
    from .cluster import workers_are_children
    from .cluster.placement import worker_placement
    from .ledger.filesystems import NETWORK_FILESYSTEMS, filesystem_type

    with ledger.engine.connect() as connection:  # the file SQLite really opened; "" in memory
        database = next((row[2] for row in connection.exec_driver_sql("PRAGMA database_list") if row[1] == "main"), "")
    kind = config.cluster.kind
    fstype = filesystem_type(database) if database else None
    if not workers_are_children(config) and fstype in NETWORK_FILESYSTEMS:
        # Even if every node were this host: the journal falls back to DELETE there, and a cluster's shared
        # filesystem is where other nodes' workers would write it from.
        raise PreflightFailed(f"preflight: the SQLite ledger {database} is on a network filesystem ({fstype}) and "
                              f"cluster.kind: {kind} runs workers on cluster nodes; {SQLITE_ADVICE}; nothing was run")
    placement = worker_placement(config.cluster)  # an unknown SLURM partition: its ConfigError (exit 2)
    if not placement.one_host:
        raise PreflightFailed(f"preflight: {placement.what}, and the ledger is the SQLite file {database or '(memory)'}; "
                              f"{SQLITE_ADVICE}; nothing was run")
    log.info("preflight: SQLite ledger %s: %s", database or "(memory)", placement.what)
    return placement


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
