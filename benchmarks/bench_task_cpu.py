"""CPU seconds a worker spends per model, without Dask: pdrflow's two tasks against a plain script's one.

    .venv/bin/python benchmarks/bench_task_cpu.py [--models 40] [--repeat 3] [--database postgresql|sqlite]

Where ``bench_scale.py``'s overhead scenario sees every process of a cluster at once (on 2 shared cores,
so its figures are CPU), this isolates one worker's own work per model, in one process on an idle core:

- ``pdrflow``: ``tasks.run.run_model`` then ``tasks.archive.archive_job`` for each job of a registered
  grid, called directly with the worker's resources (one ledger engine, leases off): inputs rendered,
  copies of the input tree, the null executables, sha256 of the outputs, the ledger's four transactions
  (each its own database connection, as on a worker), the guarded SFTP upload with its checks.
- ``plain``: ``bench_scale.null_model``: the same executables in a fresh directory, nothing recorded.
- ``plain_sftp``: the same plus a paramiko put of every output (one SSH connection a model).

CPU = this process and its reaped children (the executables), per model; the servers' own CPU (the
PostgreSQL backend a connection forks, sshd) is not in it. Contenders alternate ``--repeat`` times so
background load hits each alike; medians are printed. CPU samples of one contender spread by up to 30 %
on this machine, so each also counts what does not vary: database connections opened and SSH packets
sent, per model. Needs PostgreSQL and sshd (``tests/services``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_scale import grid_axes, null_model
from helpers import NULL_SPECIES, base_config, write_config, write_null_home
from services.databases import APP_PASSWORD, remove_server, start_server
from services.sshd import Sshd


class Counts:
    """Database connections opened (any engine) and SSH packets sent (paramiko), while installed."""

    def __init__(self) -> None:
        self.connections = 0
        self.packets = 0

    def install(self) -> None:
        import paramiko.packet
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def connected(*_: Any) -> None:
            self.connections += 1

        event.listen(Engine, "connect", connected)
        send = paramiko.packet.Packetizer.send_message

        def counting_send(packetizer: Any, data: Any) -> None:
            self.packets += 1
            send(packetizer, data)

        paramiko.packet.Packetizer.send_message = counting_send  # type: ignore[method-assign]

    def take(self) -> tuple[int, int]:
        taken = (self.connections, self.packets)
        self.connections = self.packets = 0
        return taken


COUNTS = Counts()


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pdrflow_per_model(run: Path, home: Path, models: int, database: dict[str, Any], sftp: dict[str, Any],
                      profile: bool = False) -> float:
    import pdrflow.tasks.resources as resources
    from pdrflow.config.loading import load_config
    from pdrflow.ledger import Ledger
    from pdrflow.plan import plan_run
    from pdrflow.tasks.archive import archive_job
    from pdrflow.tasks.budget import Budget
    from pdrflow.tasks.run import run_model
    from pdrflow.tasks.types import ModelJob

    config_dict = base_config(run, home=home, grid=run.name, database=database, storage=sftp)
    config_dict["grid"].update(grid_axes(models))
    config = load_config(write_config(run / "run.yaml", config_dict))
    plan = plan_run(config)
    ledger = Ledger(config.database.sqlalchemy_url())
    ledger.register_grid(config.grid.name, plan.specs.values())
    jobs = ledger.jobs(config.grid.name)
    ledger.close()
    # A worker's resources (its one engine, storage opened per archival), the budgets' leases off: no scheduler.
    worker = resources.WorkerResources()
    worker.budget = lambda name, max_leases: Budget(name, None)  # type: ignore[method-assign]
    previous = resources._plugin
    resources._plugin = lambda: worker
    try:
        COUNTS.take()
        profiler = cProfile.Profile() if profile else None
        started = cpu_seconds()
        if profiler is not None:
            profiler.enable()
        for job in jobs:
            archive_job(run_model(ModelJob(job.id, plan.specs[job.model_hash]), plan.settings), plan.settings)
        spent = (cpu_seconds() - started) / models
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(40)
        return spent
    finally:
        resources._plugin = previous
        worker.teardown(None)


def plain_per_model(run: Path, home: Path, models: int, archive: dict[str, Any] | None) -> float:
    import distributed

    scratch = run / "scratch"
    scratch.mkdir(parents=True)
    get_worker = distributed.get_worker
    distributed.get_worker = type("Worker", (), {"address": "in-process"})  # null_model names its worker
    try:
        COUNTS.take()
        started = cpu_seconds()
        for index in range(models):
            null_model(index, str(home), str(scratch), list(NULL_SPECIES), archive)
        return (cpu_seconds() - started) / models
    finally:
        distributed.get_worker = get_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--profile", action="store_true", help="cProfile pdrflow's tasks (to stderr; its CPU counts too)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-task-cpu-"))
    os.environ.update({"PDRFLOW_DB_PASSWORD": APP_PASSWORD, "SSH_AUTH_SOCK": ""})
    postgres = start_server("postgresql") if args.database == "postgresql" else None
    sshd = Sshd(workdir=work / "sshd", host="127.0.0.1", max_startups=None)
    sshd.start()
    samples: dict[str, list[float]] = {"pdrflow": [], "plain": [], "plain_sftp": []}
    counts: dict[str, tuple[float, float]] = {}
    COUNTS.install()

    def sample(name: str, per_model: float, models: int) -> None:
        samples[name].append(per_model)
        connections, packets = COUNTS.take()
        counts[name] = (connections / models, packets / models)

    try:
        home = write_null_home(work / "home")
        known_hosts = sshd.write_known_hosts(work / "known_hosts")
        for repeat in range(args.repeat):
            run = work / f"pdrflow{repeat}"
            run.mkdir()
            (run / "archive").mkdir()
            database = {"url": postgres.url} if postgres is not None else {}
            sftp = {"kind": "sftp", "host": "127.0.0.1", "port": sshd.port, "username": "root",
                    "root": str(run / "archive"), "key_filename": str(sshd.client_key), "known_hosts": str(known_hosts)}
            sample("pdrflow", pdrflow_per_model(run, home, args.models, database, sftp, args.profile), args.models)
            sample("plain", plain_per_model(work / f"plain{repeat}", home, args.models, None), args.models)
            archive = {"root": str(work / f"plain-archive{repeat}"), "host": "127.0.0.1", "port": sshd.port,
                       "username": "root", "key_filename": str(sshd.client_key), "known_hosts": str(known_hosts)}
            sample("plain_sftp", plain_per_model(work / f"plain-sftp{repeat}", home, args.models, archive), args.models)
    finally:
        sshd.cleanup()
        if postgres is not None:
            remove_server(postgres)
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(json.dumps({
        "setup": {"models_per_sample": args.models, "repeat": args.repeat, "database": args.database,
                  "archive": "sftp on a loopback sshd", "onion_species": len(NULL_SPECIES)},
        "cpu_ms_per_model": {name: [round(1000 * value, 1) for value in values] for name, values in samples.items()},
        "median_cpu_ms_per_model": {name: round(1000 * value, 1) for name, value in medians.items()},
        "pdrflow_beyond_plain_sftp_ms": round(1000 * (medians["pdrflow"] - medians["plain_sftp"]), 1),
        "database_connections_per_model": {name: round(c, 2) for name, (c, _) in counts.items()},
        "ssh_packets_sent_per_model": {name: round(p, 1) for name, (_, p) in counts.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
