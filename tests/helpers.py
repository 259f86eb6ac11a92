"""Shared test helpers: a null KOSMA-tau home, config files, the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

NULL_PDR = """#!/bin/sh
# null KOSMA-tau PDR code: writes the contract's files and nothing else
if [ "$1" = "--version" ]; then echo "null pdrexe"; echo "Revision: null-1"; echo "compiled the Nov 28 2026 at 12:00:00"; exit 0; fi
echo "null pdrexe: not KOSMA-tau"
if [ "$NULL_PDR_FAIL" = "1" ]; then echo "null pdrexe: failing on request"; exit 7; fi
sum=$(cksum < PDRNEW.INP)
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do
  echo "$f $sum" > "pdroutput/$f"
done
echo "mcdrt $sum" > Out/mrt.dat
"""

NULL_ONION = """#!/bin/sh
# null onion: reads the species from ONION3.INP, writes its six files, touches the structure file
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
read species < ONION3.INP
[ -f CTRL_IND ] || { echo "null onionexe: CTRL_IND missing"; exit 3; }
for f in "jerg_$species.smli" "jerg_$species.srli" "jtemp_$species.smli" "jtemp_$species.smlc" \\
         "linebt_$species.out" "ONION3_$species.OUT"; do
  echo "$species" > "onionoutput/$f"
done
echo "onion $species" >> "$1"
echo "null onionexe $species done"
"""

NULL_SPECIES = ("CO", "C+", "C", "O")


def write_null_home(root: Path, species: tuple[str, ...] = NULL_SPECIES) -> Path:
    for sub in ("pdrinpdata", "onioninpdata", "In"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in (("pdrexe", NULL_PDR), ("onionexe", NULL_ONION)):
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    (root / "pdrinpdata" / "chem_rates_test.dat").write_text("null rates\n")
    for s in species:
        (root / "onioninpdata" / f"ONION3.INP.{s}").write_text(f"{s}\n")
    return root


def base_config(run_dir: Path, *, home: Path | None, grid: str = "testgrid", **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "grid": {"name": grid, "metallicity": [1.0], "density": [1.0e3, 1.0e4], "mass": [0.1], "fuv": [10.0, 100.0]},
        "kosma_tau": {"standin": True, "onion_species": list(NULL_SPECIES)}
        if home is None
        else {"home": str(home), "chem_rates": "chem_rates_test.dat", "onion_species": list(NULL_SPECIES)},
        "database": {"url": f"sqlite:///{run_dir / 'ledger.sqlite'}"},
        "storage": {"kind": "local", "root": str(run_dir / "archive")},
        "cluster": {"kind": "local", "n_workers": 2},
        "scratch": {"root": str(run_dir / "scratch")},
        "run": {"archive_backoff_initial": 0.2, "archive_backoff_max": 1.0},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the real ``pdrflow`` command in a child process and capture everything."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pdrflow", *args], capture_output=True, text=True, timeout=timeout, env=full_env,
        stdin=subprocess.DEVNULL, check=False,
    )


def status(config_path: Path) -> dict[str, Any]:
    done = cli("status", str(config_path), "--json")
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def verify(config_path: Path) -> dict[str, Any]:
    done = cli("verify", str(config_path), "--json")
    document = json.loads(done.stdout)
    document["returncode"] = done.returncode
    return document


def ledger_rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    # closed, not only committed (sqlite3's context manager): an open reader keeps the -wal and -shm files
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(query, params).fetchall()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---- the fault matrix's consistency check (tests/test_fault_matrix.py) ---------------------------

TEMPORARY_MARKERS = (".pdrflow-", ".part", ".old", ".tmp", "~")


def _is_temporary(path: Path) -> bool:
    name = path.name
    return any(marker in name for marker in TEMPORARY_MARKERS[:1]) or name.endswith(TEMPORARY_MARKERS[1:])


def _ledger_engine(config: Any) -> Any:
    from sqlalchemy import create_engine

    return create_engine(config.database.sqlalchemy_url())


def _load_config_with(config_path: Path, env: dict[str, str] | None) -> Any:
    """pdrflow's own config loader, with ``env`` (e.g. PDRFLOW_DB_PASSWORD) visible while it reads."""
    from pdrflow.config import load_config

    saved = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        return load_config(config_path)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_local_grid(run_dir: Path, home: Path, *, n_workers: int, **run: Any) -> Path:
    """The base config's 4-model grid on a LocalCluster of one-thread workers (``run``: the config's run
    section): ``pdrflow run`` exits 0, the grid ends consistent and each model ran once. Returns the config."""
    settings = base_config(run_dir, home=home, run=run)
    settings["cluster"].update(n_workers=n_workers, threads_per_worker=1)
    config = write_config(run_dir / "run.yaml", settings)
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = assert_consistent(config, models=4)
    assert set(summary["model_runs"].values()) == {1}
    return config


def assert_consistent(
    config_path: Path,
    *,
    env: dict[str, str] | None = None,
    files_per_model: int | None = 9 + 7 * len(NULL_SPECIES),
    models: int | None = None,
    run_verify: bool = True,
) -> dict[str, Any]:
    """The invariants every fault scenario must end with, once its one documented command finished the grid.

    - every job of the grid is ``archived``; no job and no attempt is left ``running``; every
      attempt has ended; no worker job (SLURM) is left open;
    - each job was archived exactly once: one ``ok`` archive attempt, no model attempt started after
      it (an archived model is never computed again), and its archived_files rows are unique paths
      (``files_per_model`` of them when given);
    - the archive holds no temporary or partial file (``.pdrflow-*``, ``*.part``, ``*.old``) and no
      final file without a ledger row, and every row's size and sha256 match the bytes on disk;
    - ``pdrflow verify CONFIG`` exits 0.

    The archive is walked on this machine: local storage, or SFTP to a loopback sshd (same paths).
    Returns a summary for scenario-specific checks: ``model_runs`` (job name → model attempts),
    ``model_ok`` (job name → successful model attempts), ``archive_attempts``, ``counts``.
    """
    import hashlib

    from sqlalchemy import text

    config = _load_config_with(config_path, env)
    grid = config.grid.name
    engine = _ledger_engine(config)
    try:
        with engine.connect() as db:
            grid_id = db.execute(text("select id from grids where name = :g"), {"g": grid}).scalar_one()
            jobs = {row.id: row for row in db.execute(
                text("select id, name, state, staged_dir from jobs where grid_id = :g"), {"g": grid_id})}
            attempts = db.execute(text(
                "select a.job_id, a.kind, a.outcome, a.started_at, a.ended_at from attempts a "
                "join jobs j on a.job_id = j.id where j.grid_id = :g order by a.id"), {"g": grid_id}).all()
            files = db.execute(text(
                "select f.job_id, f.path, f.size, f.sha256 from archived_files f "
                "join jobs j on f.job_id = j.id where j.grid_id = :g"), {"g": grid_id}).all()
            open_worker_jobs = db.execute(text(
                "select external_id from worker_jobs where grid_id = :g and ended_at is null"), {"g": grid_id}).all()
    finally:
        engine.dispose()

    counts: dict[str, int] = {}
    for job in jobs.values():
        counts[job.state] = counts.get(job.state, 0) + 1
    problems: list[str] = []
    if models is not None and len(jobs) != models:
        problems.append(f"{len(jobs)} jobs in the ledger, expected {models}")
    if counts != {"archived": len(jobs)}:
        problems.append(f"not every job is archived: {counts}")
    for job in jobs.values():
        if job.state == "archived" and job.staged_dir:
            problems.append(f"{job.name}: archived but still points at staged outputs {job.staged_dir}")
    open_attempts = [(jobs[a.job_id].name, a.kind) for a in attempts if a.outcome == "running" or a.ended_at is None]
    if open_attempts:
        problems.append(f"attempts left running/open: {open_attempts}")
    if open_worker_jobs:
        problems.append(f"worker jobs never marked ended: {[row[0] for row in open_worker_jobs]}")

    model_runs = {job.name: 0 for job in jobs.values()}
    model_ok = {job.name: 0 for job in jobs.values()}
    archive_attempts = {job.name: 0 for job in jobs.values()}
    archived_ok: dict[int, list[Any]] = {}
    for a in attempts:
        name = jobs[a.job_id].name
        if a.kind == "model":
            model_runs[name] += 1
            model_ok[name] += a.outcome == "ok"
        else:
            archive_attempts[name] += 1
            if a.outcome == "ok":
                archived_ok.setdefault(a.job_id, []).append(a)
    for job_id, job in jobs.items():
        oks = archived_ok.get(job_id, [])
        if len(oks) != (1 if job.state == "archived" else 0):
            problems.append(f"{job.name}: {len(oks)} successful archive attempts")
        if oks:
            later = [a for a in attempts if a.job_id == job_id and a.kind == "model" and a.started_at > oks[0].ended_at]
            if later:
                problems.append(f"{job.name}: computed again after it was archived ({len(later)} model runs)")
        if job.state == "archived" and model_ok[job.name] < 1:
            problems.append(f"{job.name}: archived without a successful model run")

    paths = [f.path for f in files]
    if len(paths) != len(set(paths)):
        problems.append("archived_files holds a path twice")
    per_job: dict[int, int] = {}
    for f in files:
        per_job[f.job_id] = per_job.get(f.job_id, 0) + 1
    for job_id, job in jobs.items():
        expected = files_per_model if job.state == "archived" else 0
        if expected is not None and per_job.get(job_id, 0) != expected:
            problems.append(f"{job.name}: {per_job.get(job_id, 0)} archived_files rows, expected {expected}")

    root = Path(str(config.storage.root))
    grid_dir = root / grid
    on_disk = files_under(grid_dir)
    temporaries = [str(p) for p in on_disk if _is_temporary(p)]
    if temporaries:
        problems.append(f"temporary/partial files left in the archive: {temporaries[:10]}"
                        + (f" (+{len(temporaries) - 10})" if len(temporaries) > 10 else ""))
    recorded = {f.path: f for f in files}
    unrecorded = [str(p) for p in on_disk if not _is_temporary(p) and str(p.relative_to(root)) not in recorded]
    if unrecorded:
        problems.append(f"final files without a ledger row: {unrecorded[:10]}")
    for f in files:
        path = root / f.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"ledger row {f.path} points at a missing file ({exc.strerror})")
            continue
        if (len(data), hashlib.sha256(data).hexdigest()) != (f.size, f.sha256):
            problems.append(f"ledger row {f.path} does not match the bytes on disk")

    report: dict[str, Any] = {}
    if run_verify:
        done = cli("verify", str(config_path), "--json", env=env)
        if done.returncode != 0:
            problems.append(f"pdrflow verify exited {done.returncode}: {done.stdout[-800:]}{done.stderr[-800:]}")
        else:
            report = json.loads(done.stdout)
            if report.get("checked") != len(files):
                problems.append(f"pdrflow verify checked {report.get('checked')} files, the ledger has {len(files)}")
    assert not problems, "inconsistent final state:\n  " + "\n  ".join(problems)
    return {"counts": counts, "model_runs": model_runs, "model_ok": model_ok, "archive_attempts": archive_attempts,
            "files": len(files), "verify": report}


def slow_null_home(root: Path, null_home: Path, seconds: float, *, pad_bytes: int = 0) -> Path:
    """A copy of the null KOSMA-tau home whose pdrexe sleeps ``seconds`` (and pads pdrout.hdf by ``pad_bytes``)."""
    import shutil

    home = root / f"slow-home-{seconds:g}-{pad_bytes}"
    shutil.copytree(null_home, home, symlinks=True)
    pdr = home / "pdrexe"
    script = pdr.read_text().replace('echo "null pdrexe: not KOSMA-tau"', f"sleep {seconds}")
    if pad_bytes:
        script += f"head -c {pad_bytes} /dev/urandom >> pdroutput/pdrout.hdf\n"
    pdr.write_text(script)
    return home


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition",
             process: subprocess.Popen[str] | None = None, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy (ledger not created yet counts as false); fail early when
    ``process`` (a driver) ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except sqlite3.Error:
            pass
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the driver ended (exit {process.returncode}) before {what}:\n{output}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def start_run(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``pdrflow run`` in the background, in a session of its own (``finish_run`` can kill all of it)."""
    return subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
                            start_new_session=True)


def finish_run(process: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"the driver did not finish within {timeout} s:\n{output}") from None
    return process.returncode, output


def privileged(*argv: str) -> None:
    """A root-only step a scenario needs (mount, chattr); outside CI a refusal is a skip, in CI a failure."""
    import pytest

    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        message = f"{' '.join(argv)} refused: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            raise RuntimeError(message)
        pytest.skip(message)


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)
