"""`pdrflow export` of a large grid: from a local archive and over SFTP through a delay proxy; prints one JSON document.

    .venv/bin/python benchmarks/bench_export.py [--densities 100] [--fuv 100] [--rtt-ms 20]

A real stand-in grid of 4 models (onion species C+ and CO) is run first; its first model's archived
files (structure, chemistry, two line tables: the files the reader fetches) are then hard-linked under
every name of a densities x FUV grid registered in a ledger of its own (10,000 models by default), and
recorded there as archived with their real sizes and sha256. Each contender is one ``export_grid`` in a
child process (its own peak RSS): ``local`` reads the archive directory, ``sftp_<rtt>ms`` the same
directory served by an OpenSSH sshd on 127.0.0.1 through the delay proxy, models read
``files_in_flight`` at once (8, the default, unless ``--files-in-flight``). Reported: wall seconds, ms per model, peak RSS of the child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers import base_config, write_config

SPECIES = ["C+", "CO"]
SOURCE_GRID = "benchexportsrc"
GRID = "benchexport"


def run_source(work: Path) -> Path:
    document = base_config(work / "src", home=None, grid=SOURCE_GRID, kosma_tau={"standin": True,
                                                                                  "onion_species": SPECIES})
    (work / "src").mkdir()
    config = write_config(work / "src" / "grid.yaml", document)
    done = subprocess.run([sys.executable, "-m", "pdrflow", "run", str(config)], capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the source grid run failed:\n{done.stdout}\n{done.stderr}")
    return work / "src"


def big_document(work: Path, densities: int, fuv: int) -> dict[str, Any]:
    document = base_config(work, home=None, grid=GRID, kosma_tau={"standin": True, "onion_species": SPECIES})
    document["grid"].update(density=[10.0 ** (2 + 5 * k / max(densities - 1, 1)) for k in range(densities)],
                            fuv=[10.0 ** (0.5 + 4 * k / max(fuv - 1, 1)) for k in range(fuv)])
    document["run"]["max_models"] = 10 ** 7
    return document


def build_big_grid(work: Path, source: Path, densities: int, fuv: int) -> Path:
    """Register the big grid and record every model as archived with the source model's files (hard links)."""
    from sqlalchemy import insert, select, update

    from pdrflow.config import load_config
    from pdrflow.ledger import Ledger
    from pdrflow.ledger.schema import ArchivedFile, Grid, Job
    from pdrflow.plan import plan_run
    from pdrflow.results import chemistry_path, linebt_path, structure_path
    from pdrflow.storage.base import sha256_file

    config_path = write_config(work / "grid.yaml", big_document(work, densities, fuv))
    config = load_config(config_path)
    plan = plan_run(config)
    ledger = Ledger(config.database.sqlalchemy_url())
    try:
        ledger.register_grid(GRID, plan.specs.values())
        src_ledger = Ledger(f"sqlite:///{source / 'ledger.sqlite'}", create=False)
        with src_ledger.engine.connect() as db:
            name, provenance = db.execute(select(Job.name, Job.provenance).order_by(Job.id).limit(1)).one()
        src_ledger.close()
        src_archive = source / "archive"
        templates = [(structure_path(SOURCE_GRID, name), structure_path), (chemistry_path(SOURCE_GRID, name),
                                                                           chemistry_path)]
        templates += [(linebt_path(SOURCE_GRID, name, s), lambda g, j, s=s: linebt_path(g, j, s)) for s in SPECIES]
        hashed = [(sha256_file(src_archive / path), make) for path, make in templates]
        root = config.storage.root
        with ledger.engine.begin() as db:
            grid_id = db.execute(select(Grid.id).where(Grid.name == GRID)).scalar_one()
            jobs = db.execute(select(Job.id, Job.name).where(Job.grid_id == grid_id)).all()
            db.execute(update(Job).where(Job.grid_id == grid_id).values(state="archived", provenance=provenance))
            rows = []
            for job_id, job_name in jobs:
                for ((size, sha), make), (path, _) in zip(hashed, templates, strict=True):
                    target = make(GRID, job_name)
                    (root / target).parent.mkdir(parents=True, exist_ok=True)
                    os.link(src_archive / path, root / target)
                    rows.append({"job_id": job_id, "path": target, "size": size, "sha256": sha})
            db.execute(insert(ArchivedFile), rows)
    finally:
        ledger.close()
    return config_path


def child(config_path: str, out: str) -> None:
    """One export, in a process of its own: its peak RSS is the export's alone."""
    from pdrflow.config import load_config
    from pdrflow.export import export_grid

    config = load_config(config_path)
    started = time.perf_counter()
    result = export_grid(config, Path(out))
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": round(seconds, 2), "models": result.coverage.archived,
                      "peak_rss_mb": round(peak_kb / 1024, 1), "fits_files": len(result.modelset.fits)
                      if result.modelset else 0}))


def contender(config_path: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", str(config_path), str(out)], capture_output=True,
                          text=True, timeout=7200, check=False)
    if done.returncode != 0:
        raise SystemExit(f"export failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["ms_per_model"] = round(1000 * result["seconds"] / max(result["models"], 1), 2)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--densities", type=int, default=100)
    parser.add_argument("--fuv", type=int, default=100)
    parser.add_argument("--rtt-ms", type=float, nargs="*", default=[20.0])
    parser.add_argument("--files-in-flight", type=int, nargs="+", default=[8],
                        help="storage.files_in_flight of each SFTP contender (8: the default)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from services.sshd import Sshd
    from services.tcp_proxy import TcpProxy

    from pdrflow.config import load_config

    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-export-"))
    work.chmod(0o755)
    try:
        started = time.perf_counter()
        source = run_source(work)
        config_path = build_big_grid(work, source, args.densities, args.fuv)
        result: dict[str, Any] = {
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "models": args.densities * args.fuv, "onion_species": SPECIES,
            "files_read_per_model": 2 + len(SPECIES), "setup_s": round(time.perf_counter() - started, 1),
            "local": contender(config_path, work / "out-local"), "sftp": [],
        }
        document = big_document(work, args.densities, args.fuv)
        with Sshd(workdir=work / "sshd") as server:
            known_hosts = work / "known_hosts"
            for rtt in args.rtt_ms:
                with TcpProxy(server.port, delay=rtt / 2000) as proxy:
                    server.write_known_hosts(known_hosts, proxy.port)
                    for in_flight in args.files_in_flight:
                        storage = {"kind": "sftp", "host": server.host, "port": proxy.port, "username": "root",
                                   "root": str(work / "archive"), "key_filename": str(server.client_key),
                                   "known_hosts": str(known_hosts), "files_in_flight": in_flight}
                        sftp = write_config(work / f"sftp-{rtt:g}.yaml", {**document, "storage": storage})
                        assert load_config(sftp).storage.files_in_flight == in_flight  # type: ignore[union-attr]
                        result["sftp"].append({"rtt_ms": rtt, "files_in_flight": in_flight,
                                               **contender(sftp, work / f"out-sftp-{rtt:g}")})
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
