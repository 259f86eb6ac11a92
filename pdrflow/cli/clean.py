"""``pdrflow clean``: remove the grid's orphaned scratch directories, and say how much that freed.

A scratch directory is removed only when pdrflow can prove it is this grid's and in nobody's use:
its name is the run task's (``<grid>-<model>-job<id>-<8 hex>``, tasks/run.py) for a job of this grid,
it is a real directory of this user carrying pdrflow's marker (or a run's manifest) naming that job,
the ledger does not point at it as staged outputs (an archival or a diagnosis still needs those), and
its job is not running under a live driver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..config import Config
from ..states import JobState
from .common import EXIT_OK, ledger_exists, open_ledger_of

if TYPE_CHECKING:
    from ..ledger import JobRef, Ledger

_SUFFIX = re.compile(r"-job(?P<job>\d+)-[0-9a-f]{8}$")


@dataclass
class Sweep:
    removed: list[Path] = field(default_factory=list)
    freed: int = 0  # bytes
    kept: int = 0  # this grid's, but still in use (staged outputs, a running job)
    unproven: int = 0  # named like this grid's scratch, without pdrflow's marker: left alone

    def summary(self, dry_run: bool = False) -> str:
        verb = "would remove" if dry_run else "removed"
        text = f"{verb} {len(self.removed)} scratch directories, {self.freed / 1e6:.1f} MB {'' if dry_run else 'freed'}"
        extra = []
        if self.kept:
            extra.append(f"{self.kept} kept (staged outputs or a running job)")
        if self.unproven:
            extra.append(f"{self.unproven} left alone (no pdrflow marker: not provably pdrflow's)")
        return text.rstrip() + (f"; {', '.join(extra)}" if extra else "")


def _marked_job(path: Path) -> tuple[str, int] | None:
    """(grid, job id) from pdrflow's marker, else from a run's manifest; None when neither is there."""
    from ..tasks.run import SCRATCH_MARKER
    from ..tasks.types import MANIFEST_FILE

    for name in (SCRATCH_MARKER, MANIFEST_FILE):
        try:
            document = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict) or not isinstance(document.get("job_id"), int):
            continue
        grid = document.get("grid")
        if name == MANIFEST_FILE:  # older scratch dirs: the manifest names the job, the dir name the grid
            grid = path.name.split(f"-{document.get('name')}-job", 1)[0] if document.get("name") else None
        if isinstance(grid, str):
            return grid, document["job_id"]
    return None


def _size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):  # links are not followed: only what removing frees
        for name in files:
            try:
                total += (Path(directory) / name).lstat().st_size
            except OSError:
                pass
    return total


def _driver_alive(ledger: Ledger, grid: str) -> bool:
    """A live driver holds the grid (the lease's own rule: a fresh heartbeat, or a live pid on this host)."""
    from sqlalchemy import select

    from ..ledger.lease import DEFAULT_TTL, _alive
    from ..ledger.schema import DriverLease, Grid, utcnow

    with ledger._session() as session:
        lease = session.scalar(select(DriverLease).join(Grid, Grid.id == DriverLease.grid_id)
                               .where(Grid.name == grid))
        if lease is None:
            return False
        heartbeat: datetime = lease.heartbeat_at
        if lease.host == socket.gethostname() and not _alive(lease.pid):
            return False
        return (utcnow() - heartbeat).total_seconds() < DEFAULT_TTL


def sweep(config: Config, ledger: Ledger, *, dry_run: bool = False) -> Sweep:
    """Find (and unless ``dry_run`` remove) the grid's orphaned scratch directories."""
    result = Sweep()
    root = config.scratch.resolved_root()
    grid = config.grid.name
    try:
        # Listed before the ledger is read: a directory made meanwhile belongs to a job already running then.
        candidates = sorted(p for p in root.iterdir() if p.name.startswith(f"{grid}-") and _SUFFIX.search(p.name))
    except OSError:
        return result  # no scratch root here: nothing to clean
    jobs: dict[int, JobRef] = {job.id: job for job in ledger.jobs(grid)}
    live_driver = _driver_alive(ledger, grid)
    for path in candidates:
        match = _SUFFIX.search(path.name)
        assert match is not None
        job = jobs.get(int(match["job"]))
        if job is None or path.name != f"{grid}-{job.name}-job{job.id}-{path.name[-8:]}":
            continue  # another grid whose name starts like this one's, or no job of this grid
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _marked_job(path) != (grid, job.id):
            result.unproven += 1
            continue
        in_use = (job.staged_dir is not None and Path(job.staged_dir) == path and job.state != JobState.ARCHIVED) \
            or (job.state == JobState.RUNNING and live_driver)
        if in_use:
            result.kept += 1
            continue
        result.freed += _size(path)
        result.removed.append(path)
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    return result


def cmd_clean(config: Config, args: argparse.Namespace, console: Console) -> int:
    if not ledger_exists(config):
        console.print(Sweep().summary(args.dry_run) + " (no ledger yet)")
        return EXIT_OK
    ledger = open_ledger_of(config)
    try:
        result = sweep(config, ledger, dry_run=args.dry_run)
    finally:
        ledger.close()
    for path in result.removed if args.dry_run or args.verbose else ():
        console.print(f"{'would remove' if args.dry_run else 'removed'} {path}", markup=False, highlight=False)
    console.print(result.summary(args.dry_run))
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = ("remove the grid's orphaned scratch directories (interrupted or lost runs) below scratch.root on this "
            "machine; staged outputs and running jobs' directories are kept")
    sub = commands.add_parser("clean", help=text, description=text)
    sub.add_argument("config", help="the run's YAML config file")
    sub.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    sub.set_defaults(handler=cmd_clean)
