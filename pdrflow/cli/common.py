"""What every ``pdrflow`` command shares: exit codes, opening the ledger, the counts table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ..config import Config
from ..states import STATE_STYLES, STATES

if TYPE_CHECKING:
    from ..ledger import Ledger

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def worker_safety_config() -> dict[str, object]:
    """CPython < 3.11.9 can deadlock a Dask worker when its statistical profiler
    (sys._current_frames every 10 ms) races thread creation or exit (gh-106883); pdrflow's tasks
    start threads (step timers, paramiko). Seen here: workers hung for good. Switch it off there."""
    if sys.version_info < (3, 11, 9) or (3, 12) <= sys.version_info < (3, 12, 3):
        return {"distributed.worker.profile.enabled": False}
    return {}


def ledger_exists(config: Config) -> bool:
    url = config.database.sqlalchemy_url()
    return not url.drivername.startswith("sqlite") or (url.database is not None and Path(url.database).exists())


def open_ledger_of(config: Config, patience: float = 20.0) -> Ledger:
    from ..ledger.open import open_ledger  # SQLAlchemy costs ~0.5 s to import: only commands that need it pay

    return open_ledger(config.database, patience=patience)


def counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in STATES:
        if counts.get(state):
            table.add_row(f"[{STATE_STYLES[state]}]{state}[/]", str(counts[state]))
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    return table
