"""Run every benchmark; write benchmarks/results/latest.json and latest.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only orchestration,recovery,ledger,sftp,report,export]

Each benchmark is a script of its own that prints one JSON document and already compares its
contenders side by side in one run (interleaved samples); this runs them one after the other in
child processes, collects their JSON (or the error, and goes on), and records the machine: CPU
model, cores, RAM, load average before and after each benchmark, Python and library versions.
``--quick`` runs small sizes (a few minutes in all) - for checking that everything works, not for
figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {  # name: (full arguments, --quick arguments)
    "orchestration": (["bench_orchestration.py"], ["bench_orchestration.py", "--quick"]),
    "recovery": (["bench_recovery.py"], ["bench_recovery.py", "--quick"]),
    "ledger": (["bench_ledger.py"], ["bench_ledger.py", "--sizes", "1000", "10000", "--rss-seconds", "0",
                                     "--skip-postgresql"]),
    "sftp": (["bench_sftp.py"], ["bench_sftp.py", "--size-mb", "20", "--repeat", "1"]),  # RTTs 0 and 20 ms
    "report": (["bench_report.py"], ["bench_report.py", "--densities", "2", "--fuv", "2", "--repeat", "1"]),
    "export": (["bench_export.py"], ["bench_export.py", "--densities", "10", "--fuv", "10"]),  # quick: ~1 min
    "scale": (["bench_scale.py"], ["bench_scale.py", "--quick"]),  # root, SLURM, PostgreSQL, sshd; full: ~20 min
    "task_cpu": (["bench_task_cpu.py"], ["bench_task_cpu.py", "--models", "10", "--repeat", "1"]),  # root: sshd
}
# Run only when named in --only: they need root (the cluster box's network namespaces; an sshd of their own),
# and scale is long.
OPT_IN = {"scale", "task_cpu"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    versions = {}
    for package in ("pdrflow", "dask", "distributed", "SQLAlchemy", "pydantic", "paramiko", "tornado"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["sqlite"] = sqlite3.sqlite_version
    try:
        versions["openssh"] = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10, check=False).stderr.strip()
    except OSError:
        versions["openssh"] = None
    try:
        fs = subprocess.run(["df", "--output=fstype", tempfile.gettempdir()], capture_output=True, text=True,
                            timeout=10, check=False).stdout.split()[-1]
    except (OSError, IndexError):
        fs = None
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024**2, 1),
        "tmp_filesystem": fs,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_one(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(HERE / argv[0]), *argv[1:]]
    entry: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, f"benchmarks/{argv[0]}", *argv[1:]]),
                             "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    started = time.monotonic()
    print(f"run_all: {name}: {entry['command']}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            entry["error"] = f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
        else:
            entry["result"] = json.loads(done.stdout)
    except subprocess.TimeoutExpired:
        entry["error"] = f"timed out after {timeout:.0f} s"
    except json.JSONDecodeError as exc:
        entry["error"] = f"no JSON on stdout: {exc}"
    entry["wall_s"] = round(time.monotonic() - started, 1)
    entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"run_all: {name}: {'ok' if 'result' in entry else 'FAILED'} in {entry['wall_s']} s", file=sys.stderr,
          flush=True)
    return entry


# ---- markdown ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _orchestration(result: dict[str, Any]) -> list[str]:
    setup = result.get("setup", {})
    lines = [f"{setup.get('models')} models x {setup.get('repeat')} samples each, {setup.get('onion_species')} onion "
             f"species ({setup.get('files_per_model')} archived files a model), {setup.get('workers')} workers, "
             f"local archive, SQLite ledger. Steady rate: completions between the 10th and 90th percentile over "
             f"the time between them (no start-up); wall: everything, cluster start-up included. CPU: user+sys "
             f"of every process involved, per model (robust to other load on the machine).", ""]
    rows = []
    for name, c in result.get("contenders", {}).items():
        rows.append([name, c.get("rate_steady"), c.get("rate_wall"), c.get("wall_s"), c.get("cpu_ms_per_model"),
                     c.get("driver_process_cpu_ms_per_model"), c.get("ratio_steady_to_floor"),
                     c.get("ratio_wall_to_floor"), c.get("ratio_cpu_floor_to_this")])
    return lines + _table(["contender", "models/s steady", "models/s wall", "wall s", "CPU ms/model",
                           "of which driver process", "steady / floor", "wall / floor", "floor CPU / CPU"], rows)


def _recovery(result: dict[str, Any]) -> list[str]:
    rows = []
    death = result.get("worker_death")
    if death:
        waits = death.get("seconds_until_running_again") or {}
        rows.append(["kill -9 of a worker mid-model -> that model running again (s)",
                     f"median {waits.get('median')} (min {waits.get('min')}, max {waits.get('max')}), "
                     f"{len(death.get('kills', []))} kills; run exit {death.get('run_exit_code')}, final "
                     f"{death.get('final_states')}"])
    outage = result.get("sftp_outage")
    if outage:
        rows.append([f"end of a {outage.get('outage_s')} s SFTP outage -> all jobs archived (s)",
                     f"{outage.get('seconds_from_heal_to_all_archived')} (failed_storage peak "
                     f"{outage.get('failed_storage_peak_during_outage')}, backoff {outage.get('backoff')}); run exit "
                     f"{outage.get('run_exit_code')}, final {outage.get('final_states')}"])
    return _table(["measurement", "result"], rows)


def _ledger(result: dict[str, Any]) -> list[str]:
    lines = [f"`pdrflow` CLI import: {result.get('cli_import_s')} s", ""]
    rows = []
    for backend in ("sqlite", "postgresql"):
        for r in result.get(backend, []):
            rows.append([backend, r["models"], r["expand_s"], r["register_s"], r["rerun_register_s"],
                         r["status_query_s"], r["status_cli_wall_s"]])
    lines += _table(["backend", "models", "expand s", "register s", "re-register s", "status query s",
                     "status CLI wall s"], rows)
    memory = result.get("driver_memory")
    if memory:
        lines += [f"Driver peak RSS on a {memory['grid_models']}-model grid: {memory['driver_peak_rss_mb']} MB "
                  f"({memory['models_archived_in_that_time']} archived in {memory['seconds_run']} s).", ""]
    return lines


def _sftp(result: dict[str, Any]) -> list[str]:
    lines = []
    large = [result["large_file_loopback"], *result.get("large_file_over_delay_proxy", [])]
    names = list(large[0]["mb_per_s"])
    lines += [f"One {large[0]['bytes'] / 1e6:.0f} MB file (MB/s, median; each sample connects, authenticates, "
              "uploads):", ""]
    lines += _table(["contender", "loopback", *(f"{r['rtt_ms']} ms RTT proxy" for r in large[1:])],
                    [[name, *(r["mb_per_s"][name] for r in large)] for name in names])
    models = result.get("one_model_over_delay_proxy", [])
    if isinstance(models, dict):  # results written before several round-trip times were measured
        models = [models]
    if models:
        lines += [f"One model's {models[0]['files']} files ({models[0]['bytes'] / 1e6:.1f} MB) through the delay "
                  "proxy (s, median):", ""]
        lines += _table(["contender", *(f"{m['rtt_ms']} ms RTT" for m in models)],
                        [[name, *(m["seconds"][name] for m in models)] for name in models[0]["seconds"]])
    return lines


def _report(result: dict[str, Any]) -> list[str]:
    local = result["local"]
    lines = [f"Reading {local['models']} archived stand-in models back for `pdrflow report` (structure file and "
             f"{len(result['onion_species'])} line tables each, sha256-checked, parsed); s, median:", ""]
    columns = [("local directory", local), *((f"SFTP, {r['rtt_ms']} ms RTT", r) for r in result["sftp"])]
    rows = [[name, *(c["seconds"][name] for _, c in columns)] for name in ("one_at_a_time", "concurrent")]
    rows.append(["speed-up", *(c["speedup"] for _, c in columns)])
    return lines + _table(["contender", *(title for title, _ in columns)], rows)


def _export(result: dict[str, Any]) -> list[str]:
    lines = [f"`pdrflow export` of {result['models']} archived stand-in models ({result['files_read_per_model']} "
             "files read per model, sha256-checked; dataset, tables, coverage and pdrtpy model set written), one "
             "child process per contender:", ""]
    rows = [["local directory", result["local"]["seconds"], result["local"]["ms_per_model"],
             result["local"]["peak_rss_mb"]]]
    rows += [[f"SFTP, {r['rtt_ms']} ms RTT, {r['files_in_flight']} files in flight", r["seconds"], r["ms_per_model"],
              r["peak_rss_mb"]] for r in result["sftp"]]
    return lines + _table(["archive", "s", "ms/model", "peak RSS MB"], rows)


def _scale(result: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in result.get("scenarios", {}).items():
        if "error" in s:
            rows.append([name, "error", s["error"][:200]])
        elif name == "overhead":
            rows.append([name, "per-model overhead s, pdrflow / plain Dask (steady)",
                         f"{s['pdrflow']['overhead_s_per_model']} / {s['plain_dask']['overhead_s_per_model']}; "
                         f"ratio {s.get('ratio_pdrflow_to_plain_dask')}"])
        else:
            rows.append([name, f"exit {s.get('exit_code')}, {s.get('states')}",
                         f"refusals {s.get('refusals')}; peaks {s.get('peaks_sampled')}"
                         + (f"; in models {s['fraction_in_model_attempts']}" if "fraction_in_model_attempts" in s
                            else "")])
    return _table(["scenario", "result", "details"], rows)


RENDER = {"orchestration": _orchestration, "recovery": _recovery, "ledger": _ledger, "sftp": _sftp,
          "report": _report, "export": _export, "scale": _scale}


def markdown(document: dict[str, Any]) -> str:
    m = document["machine"]
    lines = [f"# pdrflow benchmarks ({'quick' if document['quick'] else 'full'})", "",
             f"{document['started']} to {document['finished']} (UTC). Machine shared with other work: compare "
             f"contenders within one table, not across runs.", ""]
    lines += _table(["machine", ""], [
        ["CPU", m["cpu_model"]], ["cores", m["cores"]], ["RAM", f"{m['ram_gb']} GB"],
        ["/tmp filesystem", m["tmp_filesystem"]], ["kernel", m["kernel"]], ["Python", m["python"]],
        ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
        ["load average at start / end", f"{m['load_average_at_start']} / {document['load_average_at_end']}"],
    ])
    for name, entry in document["benchmarks"].items():
        lines += [f"## {name}", "", f"`{entry['command']}` - {entry['wall_s']} s, load average "
                  f"{entry['load_average_before']} -> {entry['load_average_after']}", ""]
        if "error" in entry:
            lines += ["**failed**:", "", "```", entry["error"], "```", ""]
            continue
        try:
            lines += RENDER[name](entry["result"])
        except (KeyError, TypeError) as exc:
            lines += [f"(could not render the result: {exc!r}; see latest.json)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything runs")
    parser.add_argument("--only", default=",".join(n for n in BENCHMARKS if n not in OPT_IN),
                        help=f"comma-separated subset (opt-in, only when named: {', '.join(sorted(OPT_IN))})")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    document: dict[str, Any] = {
        "quick": args.quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": {},
    }
    for name in args.only.split(","):
        full, quick = BENCHMARKS[name]
        document["benchmarks"][name] = run_one(name, quick if args.quick else full, args.timeout)
    document["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    document["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.output / "latest.md").write_text(markdown(document) + "\n")
    print(json.dumps({"written": [str(args.output / "latest.json"), str(args.output / "latest.md")],
                      "failed": [n for n, e in document["benchmarks"].items() if "error" in e]}))
    sys.exit(1 if any("error" in e for e in document["benchmarks"].values()) else 0)


if __name__ == "__main__":
    main()
