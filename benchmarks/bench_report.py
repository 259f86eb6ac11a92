"""Reading a grid back for ``pdrflow report``: models one at a time vs several at once, side by side.

    .venv/bin/python benchmarks/bench_report.py [--densities 4] [--fuv 4] [--repeat 3] [--rtt-ms 0 20]

Runs a stand-in KOSMA-tau grid (3 onion species) into a local archive, starts an OpenSSH sshd on
127.0.0.1 serving that archive, and times ``report.collect`` (every archived model's structure file
and line tables fetched, checked against the ledger's sha256, parsed) through the delay proxy at
each round-trip time, and from the local directory. Contenders, interleaved: ``one_at_a_time``
(``concurrent_reads`` = 1, what the report did before) and ``concurrent`` (``files_in_flight``
models at once, the default over SFTP). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers import base_config, write_config
from services.sshd import Sshd
from services.tcp_proxy import TcpProxy

from pdrflow.config import Config, load_config
from pdrflow.report.collect import collect
from pdrflow.results import open_archive

GRID = "benchreport"
SPECIES = ["CO", "C+", "C"]


def grid_document(work: Path, densities: int, fuv: int) -> dict[str, Any]:
    document = base_config(work, home=None, grid=GRID, kosma_tau={"standin": True, "onion_species": SPECIES})
    document["grid"].update(density=[10.0 ** (3 + k / 2) for k in range(densities)],
                            fuv=[10.0 ** (1 + k / 2) for k in range(fuv)])
    return document


def run_grid(work: Path, document: dict[str, Any]) -> Path:
    config = write_config(work / "grid.yaml", document)
    done = subprocess.run([sys.executable, "-m", "pdrflow", "run", str(config)], capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the grid run failed:\n{done.stdout}\n{done.stderr}")
    return config


def sftp_config(work: Path, document: dict[str, Any], server: Sshd, port: int, known_hosts: Path) -> Config:
    """The same grid, its archive read over SFTP (the directory the grid run wrote, served by sshd)."""
    storage = {"kind": "sftp", "host": server.host, "port": port, "username": "root",
               "root": document["storage"]["root"], "key_filename": str(server.client_key),
               "known_hosts": str(known_hosts)}
    return load_config(write_config(work / f"sftp-{port}.yaml", {**document, "storage": storage}))


def timed_collect(config: Config, concurrent: bool) -> tuple[float, int]:
    with open_archive(config) as reader:
        if not concurrent:
            reader.storage.concurrent_reads = 1
        started = time.perf_counter()
        data = collect(reader)
        seconds = time.perf_counter() - started
    return seconds, sum(1 for job in data.jobs if job.archived)


@contextlib.contextmanager
def endpoint(server: Sshd, known_hosts: Path, rtt_ms: float) -> Iterator[int]:
    with TcpProxy(server.port, delay=rtt_ms / 2000) as proxy:
        server.write_known_hosts(known_hosts, proxy.port)
        yield proxy.port


def compare(config: Config, repeat: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"one_at_a_time": [], "concurrent": []}
    models = 0
    for _ in range(repeat):
        for name in samples:
            seconds, models = timed_collect(config, concurrent=name == "concurrent")
            samples[name].append(seconds)
    medians = {name: round(statistics.median(values), 3) for name, values in samples.items()}
    return {"models": models, "seconds": medians,
            "samples_seconds": {name: [round(v, 3) for v in values] for name, values in samples.items()},
            "speedup": round(medians["one_at_a_time"] / medians["concurrent"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--densities", type=int, default=4)
    parser.add_argument("--fuv", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 20.0])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-report-"))
    work.chmod(0o755)
    try:
        document = grid_document(work, args.densities, args.fuv)
        local = run_grid(work, document)
        result: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                                  "onion_species": SPECIES, "local": compare(load_config(local), args.repeat),
                                  "sftp": []}
        with Sshd(workdir=work / "sshd") as server:
            known_hosts = work / "known_hosts"
            for rtt in args.rtt_ms:
                with endpoint(server, known_hosts, rtt) as port:
                    config = sftp_config(work, document, server, port, known_hosts)
                    result["sftp"].append({"rtt_ms": rtt, "files_in_flight": config.storage.files_in_flight,
                                           **compare(config, args.repeat)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
