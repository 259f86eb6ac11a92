"""Ledger scale: grid registration and status latency at 1k/10k/100k models, SQLite vs PostgreSQL,
and the driver's peak memory on a 100k-model grid of null executables. Prints one JSON document.

    .venv/bin/python benchmarks/bench_ledger.py [--sizes 1000 10000 100000] [--rss-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import base_config, write_config, write_null_home
from services.databases import APP_PASSWORD, remove_server, start_server

from pdrflow.config import load_config
from pdrflow.grid import expand_grid
from pdrflow.kosma.installation import resolve_installation
from pdrflow.ledger import Ledger


def _grid_of(size: int) -> dict[str, list[float]]:
    """density x fuv x mass axes whose product is `size` (sizes are powers of ten)."""
    fuv = 10 if size >= 100 else 1
    mass = 10 if size >= 1000 else 1
    density = size // (fuv * mass)
    return {
        "metallicity": [1.0],
        "density": [10 ** (2 + 4 * i / density) for i in range(density)],
        "mass": [10 ** (-2 + 0.1 * i) for i in range(mass)],
        "fuv": [10 ** (0.1 * i) for i in range(fuv)],
    }


def _config(work: Path, home: Path, url: str, size: int) -> Path:
    config = base_config(work, home=home, grid=f"bench{size}", database={"url": url})
    config["grid"].update(_grid_of(size))
    return write_config(work / f"bench{size}.yaml", config)


def measure_registration(work: Path, home: Path, url: str, size: int) -> dict[str, float]:
    path = _config(work, home, url, size)
    config = load_config(path)
    installation = resolve_installation(config.kosma_tau)
    started = time.perf_counter()
    specs = list(expand_grid(config, installation.identity))
    expanded = time.perf_counter()
    ledger = Ledger(config.database.sqlalchemy_url())
    registration = ledger.register_grid(config.grid.name, specs)
    registered = time.perf_counter()
    assert registration.new == size, registration
    ledger.register_grid(config.grid.name, specs)
    reregistered = time.perf_counter()
    query_start = time.perf_counter()
    ledger.state_counts(config.grid.name)
    ledger.attempt_counts(config.grid.name)
    query = time.perf_counter() - query_start
    ledger.close()
    cli_start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pdrflow", "status", str(path), "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    cli = time.perf_counter() - cli_start
    assert json.loads(done.stdout)["total"] == size, done.stderr
    return {
        "models": size,
        "expand_s": round(expanded - started, 3),
        "register_s": round(registered - expanded, 3),
        "expand_and_register_s": round(registered - started, 3),
        "rerun_register_s": round(reregistered - registered, 3),
        "status_query_s": round(query, 4),
        "status_cli_wall_s": round(cli, 3),
    }


def _python_startup_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pdrflow.cli"], check=True, timeout=60)
    return round(time.perf_counter() - started, 3)


def measure_driver_rss(work: Path, home: Path, seconds: float) -> dict[str, object]:
    """Run a 100k-model grid of null executables for a while; sample the driver's peak RSS."""
    path = _config(work, home, f"sqlite:///{work / 'rss.sqlite'}", 100_000)
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    peak_kb = 0
    while time.monotonic() - started < seconds and driver.poll() is None:
        try:
            status = Path(f"/proc/{driver.pid}/status").read_text()
        except FileNotFoundError:
            break
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        peak_kb = max(peak_kb, int(fields.get("VmHWM", "0 kB").split()[0]))
        samples.append((round(time.monotonic() - started, 1), int(fields.get("VmRSS", "0 kB").split()[0])))
        time.sleep(1.0)
    os.killpg(driver.pid, signal.SIGINT)
    driver.wait(timeout=120)
    ledger = Ledger(f"sqlite:///{work / 'rss.sqlite'}")
    counts = ledger.state_counts("bench100000")
    ledger.close()
    return {
        "grid_models": 100_000,
        "seconds_run": seconds,
        "models_archived_in_that_time": counts.get("archived", 0),
        "driver_peak_rss_mb": round(peak_kb / 1024, 1),
        "driver_rss_mb_first_last": [round(samples[0][1] / 1024, 1), round(samples[-1][1] / 1024, 1)]
        if samples else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--rss-seconds", type=float, default=60.0)
    parser.add_argument("--skip-postgresql", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "cli_import_s": _python_startup_s(),
    }
    with tempfile.TemporaryDirectory(prefix="pdrflow-bench-") as tmp:
        work = Path(tmp)
        home = write_null_home(work / "home")
        result["sqlite"] = [measure_registration(work, home, f"sqlite:///{work / f'l{n}.sqlite'}", n)
                            for n in args.sizes]
        if not args.skip_postgresql:
            server = start_server("postgresql")
            os.environ["PDRFLOW_DB_PASSWORD"] = APP_PASSWORD
            try:
                rows = []
                for n in args.sizes:
                    server.reset()
                    rows.append(measure_registration(work, home, server.url, n))
                result["postgresql"] = rows
            finally:
                remove_server(server)
        if args.rss_seconds > 0:
            result["driver_memory"] = measure_driver_rss(work, home, args.rss_seconds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
