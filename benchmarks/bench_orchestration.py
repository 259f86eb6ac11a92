"""Orchestration overhead: models/s of null KOSMA-tau executables, side by side in one run.

    .venv/bin/python benchmarks/bench_orchestration.py [--models 300] [--repeat 2] [--quick]
                                                       [--only floor,dask,pdrflow,pdrflow_cli]

Null executables (shell scripts that only write the contract's files, tests/helpers.py), 11 onion
species (86 archived files per model), a local archive, a SQLite ledger, 2 workers. Contenders:

- ``floor``: a bare bash loop per worker (2 in parallel): for each model make the scratch dir,
  write the inputs (pre-rendered by pdrflow's renderer, written with bash's builtin ``printf``),
  run ``./pdrexe`` then ``./onionexe`` per species (copying ONION3.INP and CTRL_IND like pdrflow),
  tar ``Out/``, and ``cp`` the same 86 files to the archive layout. No fsync, no checksums.
- ``floor_fsync``: the same plus one ``sync FILE... DIR...`` per model (fsync of every archived
  file and both archive directories) - what durability costs a shell script.
- ``dask``: plain Dask futures (LocalCluster, 2 single-threaded worker processes), one task per
  model doing the same in Python (subprocess for the executables, shutil copies). No ledger.
- ``pdrflow``: the Driver API in-process (as ``pdrflow run`` does it: lease, registration,
  cluster, run + archive tasks, SQLite ledger, fsynced atomic archive with sha256).
- ``pdrflow_cli``: the real ``pdrflow run`` command in a child process (wall time only).

For each: ``wall_s`` (everything: for dask/pdrflow including cluster start-up and shutdown),
``rate_wall`` = models / wall_s, and ``rate_steady`` = the completions between the 10th and the
90th percentile divided by the time between them (excludes start-up and the tail).
``worker_s_per_model`` = 2 / rate_steady (worker-seconds per model); ``overhead_vs_floor_ms`` is
its excess over the floor's. Samples run interleaved (floor, dask, pdrflow, ... , floor, ...)
so that background load hits every contender alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
if os.environ.get("PDRFLOW_BENCH_PACKAGE"):  # a baseline copy of pdrflow to compare with (--baseline)
    sys.path.insert(0, os.environ["PDRFLOW_BENCH_PACKAGE"])

from helpers import base_config, write_config, write_null_home

SPECIES = ("CO", "C+", "C", "O", "13C+", "13C", "13CO", "OH", "CH+", "HCO+", "H13CO+")
N_WORKERS = 2


def grid_axes(models: int) -> dict[str, list[float]]:
    fuv = 10 if models % 10 == 0 and models >= 20 else 1
    density = models // fuv
    return {"metallicity": [1.0], "density": [10 ** (2 + 4 * i / density) for i in range(density)],
            "mass": [0.1], "fuv": [10 ** (0.1 * i) for i in range(fuv)]}


def write_run_config(run_dir: Path, home: Path, models: int, grid: str) -> Path:
    config = base_config(run_dir, home=home, grid=grid)
    config["grid"].update(grid_axes(models))
    config["kosma_tau"]["onion_species"] = list(SPECIES)
    return write_config(run_dir / "run.yaml", config)


def steady_rate(stamps: list[float]) -> float | None:
    """Completions between the 10th and 90th percentile / the time between them."""
    stamps = sorted(stamps)
    if len(stamps) < 5:
        return None
    lo, hi = int(0.1 * (len(stamps) - 1)), int(0.9 * (len(stamps) - 1))
    span = stamps[hi] - stamps[lo]
    return (hi - lo) / span if span > 0 else None


def cpu_seconds() -> tuple[float, float]:
    """user+sys CPU of this process (driver, scheduler) and of its reaped descendants (workers, shells,
    executables): robust to other work on the machine, unlike wall time."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


# ---- the model list every contender runs --------------------------------------------------


def model_list(config_path: Path) -> list[dict[str, Any]]:
    from pdrflow.config import load_config
    from pdrflow.grid import expand_grid
    from pdrflow.kosma import layout
    from pdrflow.kosma.inputs import render_pdr_config_json, render_pdrnew_inp
    from pdrflow.kosma.installation import resolve_installation

    config = load_config(config_path)
    installation = resolve_installation(config.kosma_tau)
    models = []
    for spec in expand_grid(config, installation.identity):
        models.append({
            "name": spec.name,
            "inp": render_pdrnew_inp(spec.parameters, spec.network_species, spec.elements, grid_comment=spec.name),
            "json": render_pdr_config_json(spec.parameters, spec.network_species, spec.elements),
            "files": layout.staged_files("G", spec.name, SPECIES, True),
        })
    return models


# ---- (0) the floor: bash ------------------------------------------------------------------


def floor_script(models: list[dict[str, Any]], home: Path, scratch: Path, archive: Path, stamps: Path,
                 fsync: bool) -> str:
    lines = ["set -e", f"H={shlex.quote(str(home))}", f"A={shlex.quote(str(archive))}",
             "mkdir -p \"$A\"/G/pdrgrid \"$A\"/G/oniongrid", f"SPECIES={shlex.quote(' '.join(SPECIES))}"]
    for model in models:
        d = shlex.quote(str(scratch / model["name"]))
        lines += [
            f"d={d}",
            'mkdir -p "$d"/pdroutput "$d"/onionoutput "$d"/Out',
            'ln -s "$H"/pdrexe "$H"/onionexe "$H"/onioninpdata "$H"/In "$H"/pdrinpdata "$d"/',
            'cd "$d"',
            f"printf '%s' {shlex.quote(model['inp'])} > PDRNEW.INP",
            f"printf '%s' {shlex.quote(model['json'])} > pdr_config.json",
            "./pdrexe > pdroutput/TEXTOUT 2>&1",
            "for s in $SPECIES; do cp onioninpdata/ONION3.INP.$s ONION3.INP; cp pdroutput/CTRL_IND CTRL_IND; "
            "./onionexe \"$d\"/pdroutput/pdrstruct_s.hdf5 > onionoutput/TEXTOUT 2>&1; "
            "cp onionoutput/TEXTOUT onionoutput/TEXTOUT_$s; done",
            "tar czf MCDRT.tar.gz Out",
        ]
        lines += [f"cp {shlex.quote(src)} \"$A\"/{shlex.quote(dst)}" for src, dst in model["files"]]
        if fsync:
            targets = " ".join(f"\"$A\"/{shlex.quote(dst)}" for _, dst in model["files"])
            lines.append(f"sync {targets} \"$A\"/G/pdrgrid \"$A\"/G/oniongrid")
        lines.append(f"echo $EPOCHREALTIME >> {shlex.quote(str(stamps))}")
    return "\n".join(lines) + "\n"


def run_floor(work: Path, home: Path, models: list[dict[str, Any]], fsync: bool) -> dict[str, Any]:
    scratch, archive = work / "scratch", work / "archive"
    scratch.mkdir(parents=True)
    stamp_files, scripts = [], []
    for w in range(N_WORKERS):
        stamp = work / f"stamps{w}"
        script = work / f"floor{w}.sh"
        script.write_text(floor_script(models[w::N_WORKERS], home, scratch, archive, stamp, fsync))
        stamp_files.append(stamp)
        scripts.append(script)
    started = time.time()
    procs = [subprocess.Popen(["bash", str(s)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for s in scripts]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"floor script failed: {err.decode()[-500:]}")
    wall = time.time() - started
    stamps = [float(x.replace(",", ".")) for s in stamp_files for x in s.read_text().split()]
    return {"wall_s": wall, "stamps": stamps, "archived_files": count_files(archive)}


# ---- (a) plain Dask futures -----------------------------------------------------------------


def dask_model(model: dict[str, Any], home: str, scratch: str, archive: str) -> str:
    """One model, the same steps as the floor, in a Dask task."""
    d = Path(scratch) / model["name"]
    for sub in ("pdroutput", "onionoutput", "Out"):
        (d / sub).mkdir(parents=True)
    for name in ("pdrexe", "onionexe", "onioninpdata", "In", "pdrinpdata"):
        (d / name).symlink_to(Path(home) / name)
    (d / "PDRNEW.INP").write_text(model["inp"])
    (d / "pdr_config.json").write_text(model["json"])
    with open(d / "pdroutput" / "TEXTOUT", "wb") as out:
        subprocess.run(["./pdrexe"], cwd=d, stdout=out, stderr=subprocess.STDOUT, check=True)
    structure = str(d / "pdroutput" / "pdrstruct_s.hdf5")
    for s in SPECIES:
        shutil.copyfile(d / "onioninpdata" / f"ONION3.INP.{s}", d / "ONION3.INP")
        shutil.copyfile(d / "pdroutput" / "CTRL_IND", d / "CTRL_IND")
        with open(d / "onionoutput" / "TEXTOUT", "wb") as out:
            subprocess.run(["./onionexe", structure], cwd=d, stdout=out, stderr=subprocess.STDOUT, check=True)
        shutil.copyfile(d / "onionoutput" / "TEXTOUT", d / "onionoutput" / f"TEXTOUT_{s}")
    with tarfile.open(d / "MCDRT.tar.gz", "w:gz") as tar:
        tar.add(d / "Out", arcname="Out")
    for src, dst in model["files"]:
        target = Path(archive) / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / src, target)
    return model["name"]


def run_dask(work: Path, home: Path, models: list[dict[str, Any]]) -> dict[str, Any]:
    from distributed import Client, LocalCluster, as_completed

    scratch, archive = work / "scratch", work / "archive"
    scratch.mkdir(parents=True)
    started = time.time()
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        cluster_up = time.time() - started
        futures = [client.submit(dask_model, m, str(home), str(scratch), str(archive), pure=False) for m in models]
        stamps = []
        for future in as_completed(futures):
            future.result()
            stamps.append(time.time())
    wall = time.time() - started
    return {"wall_s": wall, "stamps": stamps, "cluster_start_s": cluster_up, "archived_files": count_files(archive)}


# ---- (b) pdrflow ------------------------------------------------------------------------------


def run_pdrflow(work: Path, home: Path, n_models: int, profile: str | None = None) -> dict[str, Any]:
    """The Driver API in-process, as cmd_run uses it (called in a child process: run_pdrflow_child)."""
    import dask.config

    from pdrflow.cli import open_ledger_of, worker_safety_config
    from pdrflow.config import load_config
    from pdrflow.driver import Driver, Event
    from pdrflow.plan import plan_run

    path = write_run_config(work, home, n_models, "bench")
    dask.config.set({"logging.distributed": "warning", **worker_safety_config()})
    stamps: list[float] = []
    marks: dict[str, float] = {}

    def on_event(event: Event) -> None:
        if event.kind == "archived":
            stamps.append(time.time())
        elif event.kind == "dashboard":
            marks["cluster_up"] = time.time()

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
    started = time.time()
    if profiler:
        profiler.start()
    config = load_config(path)
    plan = plan_run(config)
    ledger = open_ledger_of(config, patience=300.0)
    try:
        outcome = Driver(config, plan, ledger, on_event=on_event).run()
    finally:
        ledger.close()
    if profiler:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    wall = time.time() - started
    assert outcome.archived == n_models and not outcome.failures, outcome
    import pdrflow.tasks.archive

    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "stamps": stamps, "archived_files": count_files(work / "archive"),
            "cluster_start_s": marks.get("cluster_up", started) - started,
            "driver_cpu_s": me.ru_utime + me.ru_stime,  # the driver process: driver loop + scheduler
            "package": str(Path(pdrflow.tasks.archive.__file__).parent.parent)}


def run_pdrflow_child(work: Path, home: Path, n_models: int, package: Path | None = None,
                      profile: str | None = None) -> dict[str, Any]:
    """run_pdrflow in a fresh interpreter (``package``: the directory holding another pdrflow)."""
    env = dict(os.environ)
    if package is not None:
        env["PDRFLOW_BENCH_PACKAGE"] = str(package)
        env["PYTHONPATH"] = str(package)
    command = [sys.executable, __file__, "--child-pdrflow", str(work), str(home), str(n_models)]
    if profile:
        command += ["--profile", profile]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pdrflow child exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def overlay_package(work: Path, originals: Path) -> Path:
    """A copy of this pdrflow with files from ``originals`` (same relative paths) laid over it."""
    root = work
    shutil.copytree(REPO / "pdrflow", root / "pdrflow", ignore=shutil.ignore_patterns("__pycache__"))
    for path in originals.rglob("*.py"):
        shutil.copyfile(path, root / "pdrflow" / path.relative_to(originals))
    return root


def run_pdrflow_cli(work: Path, home: Path, n_models: int) -> dict[str, Any]:
    path = write_run_config(work, home, n_models, "bench")
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pdrflow", "run", str(path)], capture_output=True, text=True,
                          timeout=3600, stdin=subprocess.DEVNULL, check=False)
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"pdrflow run exited {done.returncode}: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    return {"wall_s": wall, "stamps": [], "archived_files": count_files(work / "archive")}


# ---- driver -------------------------------------------------------------------------------------


def summarize(name: str, samples: list[dict[str, Any]], n: int) -> dict[str, Any]:
    walls = [s["wall_s"] for s in samples]
    steadies = [r for s in samples if (r := steady_rate(s["stamps"])) is not None]
    out: dict[str, Any] = {
        "wall_s": round(statistics.median(walls), 2),
        "rate_wall": round(n / statistics.median(walls), 2),
        "samples_wall_s": [round(w, 2) for w in walls],
    }
    if steadies:
        rate = statistics.median(steadies)
        out["rate_steady"] = round(rate, 2)
        out["samples_rate_steady"] = [round(r, 2) for r in steadies]
        out["worker_s_per_model"] = round(N_WORKERS / rate, 4)
    cpu = [(s["cpu_self_s"] + s["cpu_children_s"]) / n for s in samples]
    out["cpu_ms_per_model"] = round(1000 * statistics.median(cpu), 1)
    out["samples_cpu_ms_per_model"] = [round(1000 * c, 1) for c in cpu]
    driver = [s["driver_cpu_s"] / n for s in samples if "driver_cpu_s" in s]
    if driver:
        out["driver_process_cpu_ms_per_model"] = round(1000 * statistics.median(driver), 1)
    for key in ("cluster_start_s",):
        values = [s[key] for s in samples if key in s]
        if values:
            out[key] = round(statistics.median(values), 2)
    packages = {s["package"] for s in samples if "package" in s}
    if packages:
        out["package"] = sorted(packages)
    files = {s["archived_files"] for s in samples}
    out["archived_files"] = sorted(files)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="60 models, 1 sample each")
    parser.add_argument("--only", default="floor,floor_fsync,dask,pdrflow,pdrflow_cli")
    parser.add_argument("--profile", help="write a pyinstrument text profile of the in-process driver here")
    parser.add_argument("--baseline", action="append", default=[], metavar="[NAME=]DIR",
                        help="directory of original pdrflow files (e.g. storage/local.py) to lay over a copy of "
                             "this pdrflow: adds the contender pdrflow_NAME (default NAME: baseline), for "
                             "before/after in one run; repeatable")
    parser.add_argument("--child-pdrflow", nargs=3, metavar=("WORK", "HOME", "MODELS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pdrflow:
        work_dir, home_dir, n = args.child_pdrflow
        print(json.dumps(run_pdrflow(Path(work_dir), Path(home_dir), int(n), args.profile)))
        return
    if args.quick:
        args.models, args.repeat = 60, 1
    names = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-orch-"))
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"models": args.models, "repeat": args.repeat, "onion_species": len(SPECIES),
                  "files_per_model": 9 + 7 * len(SPECIES), "workers": N_WORKERS, "storage": "local",
                  "ledger": "sqlite"},
    }
    try:
        home = write_null_home(work / "home", SPECIES)
        probe = work / "probe"
        probe.mkdir()
        models = model_list(write_run_config(probe, home, args.models, "bench"))
        assert len(models) == args.models
        overlays: dict[str, Path] = {}
        for spec in args.baseline:
            label, _, directory = spec.rpartition("=")
            name = f"pdrflow_{label or 'baseline'}"
            overlays[name] = overlay_package(work / name, Path(directory))
            if name not in names:
                names.insert(names.index("pdrflow") if "pdrflow" in names else len(names), name)
        contenders: dict[str, Callable[[Path], dict[str, Any]]] = {
            "floor": lambda w: run_floor(w, home, models, fsync=False),
            "floor_fsync": lambda w: run_floor(w, home, models, fsync=True),
            "dask": lambda w: run_dask(w, home, models),
            "pdrflow": lambda w: run_pdrflow_child(w, home, args.models, profile=args.profile),
            "pdrflow_cli": lambda w: run_pdrflow_cli(w, home, args.models),
        }
        for name, package in overlays.items():
            contenders[name] = lambda w, package=package: run_pdrflow_child(w, home, args.models, package=package)
        samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for round_ in range(args.repeat):
            for name in names:
                run_dir = work / f"{name}-{round_}"
                run_dir.mkdir()
                os.sync()  # no sample pays for the previous one's dirty pages
                self0, kids0 = cpu_seconds()
                sample = contenders[name](run_dir)
                self1, kids1 = cpu_seconds()
                sample["cpu_self_s"], sample["cpu_children_s"] = self1 - self0, kids1 - kids0
                samples[name].append(sample)
                shutil.rmtree(run_dir, ignore_errors=True)
        summary = {name: summarize(name, s, args.models) for name, s in samples.items()}
        floor = summary.get("floor", {})
        for name, entry in summary.items():
            if name == "floor" or "rate_steady" not in floor:
                continue
            if "rate_steady" in entry:
                entry["ratio_steady_to_floor"] = round(entry["rate_steady"] / floor["rate_steady"], 3)
                entry["overhead_vs_floor_ms"] = round(
                    1000 * (entry["worker_s_per_model"] - floor["worker_s_per_model"]), 1)
            entry["ratio_wall_to_floor"] = round(entry["rate_wall"] / floor["rate_wall"], 3)
            entry["ratio_cpu_floor_to_this"] = round(floor["cpu_ms_per_model"] / entry["cpu_ms_per_model"], 3)
        result["contenders"] = summary
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
