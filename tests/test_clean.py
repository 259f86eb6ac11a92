"""``pdrflow clean CONFIG``: orphaned scratch of this grid removed, everything else left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import base_config, cli, ledger_rows, write_config, write_null_home
from test_terminal import FAILING_PDR

from pdrflow.cli.clean import sweep
from pdrflow.config import load_config
from pdrflow.grid import Identity, expand_grid
from pdrflow.ledger import Ledger
from pdrflow.ledger.lease import GridLease
from pdrflow.tasks.run import SCRATCH_MARKER

MB = 1_000_000
IDENTITY = Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)


def _orphan(root: Path, grid: str, name: str, job_id: int, *, marker: dict[str, object] | None, size: int,
            suffix: str = "0123abcd") -> Path:
    """A scratch directory as an interrupted run task leaves it (tasks/run.py names and marks it so)."""
    path = root / f"{grid}-{name}-job{job_id}-{suffix}"
    (path / "pdroutput").mkdir(parents=True)
    (path / "pdroutput" / "TEXTOUT").write_bytes(b"x" * size)
    if marker is not None:
        (path / SCRATCH_MARKER).write_text(json.dumps(marker))
    return path


def test_clean_removes_only_provable_orphans(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    (home / "pdrexe").write_text(FAILING_PDR)  # 2 of 4 fail: their scratch is kept for diagnosis
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    assert cli("run", str(config)).returncode == 1
    scratch = tmp_path / "scratch"
    kept_failed = sorted(p.name for p in scratch.iterdir())
    assert len(kept_failed) == 2 and all((scratch / n / SCRATCH_MARKER).is_file() for n in kept_failed)
    (job_id, name), = ledger_rows(tmp_path / "ledger.sqlite",
                                  "select id, name from jobs where state = 'archived' order by id limit 1")

    orphan = _orphan(scratch, "testgrid", name, job_id, marker={"grid": "testgrid", "job_id": job_id, "name": name},
                     size=3 * MB)
    unmarked = _orphan(scratch, "testgrid", name, job_id, marker=None, size=10, suffix="0123abce")
    other_grid = _orphan(scratch, "testgrid-b", name, job_id, marker={"grid": "testgrid-b", "job_id": job_id},
                         size=10)
    wrong_job = _orphan(scratch, "testgrid", name, job_id + 100, marker={"grid": "testgrid", "job_id": job_id + 100},
                        size=10)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("not pdrflow's")
    link = scratch / f"testgrid-{name}-job{job_id}-0123abcf"
    link.symlink_to(target)
    before = {p: p.stat().st_mtime_ns for p in scratch.rglob("*")}

    dry = cli("clean", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 1 scratch directories, 3.0 MB" in dry.stdout, dry.stdout
    assert str(orphan) in dry.stdout
    assert {p: p.stat().st_mtime_ns for p in scratch.rglob("*")} == before  # nothing touched

    done = cli("clean", str(config))
    assert done.returncode == 0, done.stderr
    assert "removed 1 scratch directories, 3.0 MB freed" in done.stdout, done.stdout
    assert "2 kept" in done.stdout and "left alone" in done.stdout, done.stdout
    assert not orphan.exists()
    for path in (unmarked, other_grid, wrong_job, link, *(scratch / n for n in kept_failed)):
        assert path.exists(), path
    assert (target / "precious").read_text() == "not pdrflow's"

    again = cli("clean", str(config))
    assert "removed 0 scratch directories, 0.0 MB freed" in again.stdout, again.stdout


def test_a_running_job_under_a_live_driver_keeps_its_scratch(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=write_null_home(tmp_path / "h"))))
    ledger = Ledger(config.database.sqlalchemy_url())
    try:
        ledger.register_grid("testgrid", expand_grid(config, IDENTITY))
        running, pending = ledger.jobs("testgrid")[:2]
        ledger.start_model(running.id, "host", None)  # the job is running now
        dirs = {job.id: _orphan(tmp_path / "scratch", "testgrid", job.name, job.id,
                                marker={"grid": "testgrid", "job_id": job.id, "name": job.name}, size=10)
                for job in (running, pending)}
        with GridLease(ledger, "testgrid"):  # a live driver (this process) holds the grid
            result = sweep(config, ledger)
            assert result.removed == [dirs[pending.id]] and result.kept == 1
            assert dirs[running.id].is_dir() and not dirs[pending.id].exists()
        # the driver is gone (its lease released): a job still marked running has no one to run it
        result = sweep(config, ledger)
        assert result.removed == [dirs[running.id]] and not dirs[running.id].exists()
    finally:
        ledger.close()
