"""Workers as SLURM jobs (dask-jobqueue's SLURMCluster), checked against the partition first.

What dask-jobqueue alone does not do, done here:
- impossible requests (unknown partition, more memory or cores than its largest node) are refused
  before any sbatch, instead of workers that never come;
- workers retire before the walltime, once the outputs they hold are archived (``--lifetime`` with stagger
  as the backstop), and adaptive scaling replaces them;
- every worker job id is recorded in the ledger; jobs left by a dead driver of the same grid are
  cancelled at start; the watchdog (``squeue``, no accounting needed) drops jobs that vanished or
  were cancelled while pending, so that adapt() submits replacements.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dask.utils import parse_bytes
from pydantic import Field

from ..config.sections import ClusterKind, ClusterSection
from ..errors import ConfigError
from .jobqueue import import_dask_jobqueue
from .security import (
    PROTOCOL,
    job_class_without,
    local_dashboard_link,
    owner_only_directory,
    private_directory,
    remove_directory,
    run_security,
    warn_if_dashboard_exposed,
    withheld_from_workers,
)

if TYPE_CHECKING:  # distributed, the ledger: imported when a cluster starts (config loading imports this module)
    from ..config import Config
    from ..ledger.lease import GridLease
    from .base import ClusterHandle
    from .placement import Placement


class SlurmClusterConfig(ClusterSection):
    """dask-jobqueue SLURMCluster; a key left null falls back to the user's dask `jobqueue.slurm` config."""

    kind: Literal["slurm"] = Field(description="selects this section's keys")
    queue: str | None = Field(description="the partition")
    account: str | None = Field(description="sbatch --account")
    cores: int | None = Field(ge=1, description="per worker job")
    memory: str | None = Field(description="per worker job, e.g. \"4GB\"")
    processes: int | None = Field(ge=1, description="Dask worker processes per worker job, sharing its cores")
    walltime: str | None = Field(description="e.g. \"02:00:00\"")
    job_extra_directives: list[str] | None = Field(description="more #SBATCH lines, e.g. [\"--qos=long\"]")
    job_script_prologue: list[str] | None = Field(description="module loads, conda activate, ...")
    interface: str | None = Field(description="network interface the workers reach the scheduler on, e.g. ib0")
    local_directory: str | None = Field(description="worker spill directory on the node")
    log_directory: str | None = Field(description="where the worker jobs' SLURM logs go")
    min_jobs: int = Field(ge=0, description="worker jobs adaptive scaling keeps at least")
    max_jobs: int = Field(ge=1, description="worker jobs at most at once")
    submit_interval: float = Field(ge=0, description="seconds at least between two sbatch calls of one driver")
    # Off: each worker's Bokeh dashboard would listen on every interface of its compute node, unauthenticated
    # (the comms are TLS, that page is plain HTTP), and cost every worker process the Bokeh import (0.4-0.65 CPU s
    # and 17 MB measured here). The scheduler's dashboard shows the workers either way.
    worker_dashboard: bool = Field(
        default=False, description="a Dask dashboard of each worker process too, on every interface of its node")
    # 0: each archival runs on the compute node that holds the model's outputs; N: on N worker processes
    # on the driver's host (login or transfer node), for compute nodes that cannot reach the archive.
    # also 0 when built in Python without it
    archive_workers: int = Field(
        default=0, ge=0, le=64,
        description=(
            "0: archive on the compute node holding the outputs; N: on N processes on the driver's host (needs "
            "scratch.staging)"
        ),
    )

log = logging.getLogger("pdrflow")
SCHEDULER = "slurm"
WATCH_INTERVAL = 5.0  # seconds between squeue looks


def _slurm(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def _fields(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


@dataclass(frozen=True)
class Partition:
    name: str
    max_memory_mb: int
    max_cpus: int


def inspect_partition(queue: str | None) -> Partition:
    """The partition a job would land in, and the largest node it offers."""
    if shutil.which("scontrol") is None:
        raise ConfigError("cluster.kind: slurm, but SLURM's scontrol is not on PATH")
    shown = _slurm("scontrol", "show", "partition", "-o", *([queue] if queue else []))
    if shown.returncode != 0 or not shown.stdout.strip():
        names = [_fields(line).get("PartitionName") for line in _slurm("scontrol", "show", "partition", "-o")
                 .stdout.splitlines()]
        raise ConfigError(f"cluster.queue: no SLURM partition {queue!r} (partitions: {', '.join(filter(None, names))})")
    partitions = [_fields(line) for line in shown.stdout.splitlines()]
    partition = next((p for p in partitions if queue or p.get("Default") == "YES"), partitions[0])
    nodes = _slurm("scontrol", "show", "node", "-o", partition.get("Nodes", ""))
    memory, cpus = 0, 0
    for line in nodes.stdout.splitlines():
        node = _fields(line)
        memory = max(memory, int(node.get("RealMemory", "0")))
        cpus = max(cpus, int(node.get("CPUTot", "0")))
    return Partition(partition["PartitionName"], memory, cpus)


def check_request(config: SlurmClusterConfig, cores: int, memory: str) -> Partition:
    partition = inspect_partition(config.queue)
    requested_mb = parse_bytes(memory) / 2**20
    if partition.max_memory_mb and requested_mb > partition.max_memory_mb:
        raise ConfigError(f"cluster.memory: {memory} per worker job is more than the largest node of partition "
                          f"{partition.name} has ({partition.max_memory_mb} MB)")
    if partition.max_cpus and cores > partition.max_cpus:
        raise ConfigError(f"cluster.cores: {cores} per worker job is more than the largest node of partition "
                          f"{partition.name} has ({partition.max_cpus} CPUs)")
    return partition


def walltime_seconds(walltime: str) -> int:
    """SLURM time formats: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    days, _, clock = walltime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts[:3]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


MAX_DRAIN_SECONDS = 300


@dataclass(frozen=True)
class WorkerRetirement:
    """When a worker job's worker retires, before SLURM kills it at the walltime.

    It takes no model after ``stop_models`` (walltime - max(30 s, 10 %)); for up to ``drain`` seconds more
    it archives the outputs it holds and retires as soon as they are (``tasks/retirement.py``). Dask's
    ``--lifetime``, the end of both, closes it anyway, max(10 s, 1 %) before the walltime even at the top of
    its ``stagger`` (drawn once per worker, shifting both)."""

    stop_models: int
    drain: int
    stagger: int

    def worker_args(self) -> list[str]:
        return ["--lifetime", f"{self.stop_models + self.drain}s", "--lifetime-stagger", f"{self.stagger}s"]


def worker_retirement(walltime: str) -> WorkerRetirement:
    seconds = walltime_seconds(walltime)
    stop_models = max(10, seconds - max(30, seconds // 10))
    stagger = max(1, min(240, seconds // 20))
    drain = seconds - max(10, seconds // 100) - stagger - stop_models
    return WorkerRetirement(stop_models, max(0, min(MAX_DRAIN_SECONDS, drain)), stagger)


class Watchdog:
    """Keeps the ledger's list of worker jobs and SLURMCluster's view honest, from squeue."""

    def __init__(self, cluster: Any, lease: GridLease | None) -> None:
        self.cluster = cluster
        self.lease = lease
        self.known: set[str] = set()
        self._last = 0.0

    def cancel_orphans(self) -> list[str]:
        if self.lease is None:
            return []
        orphans = self.lease.open_worker_jobs(SCHEDULER, others_only=True)
        if orphans:
            _slurm("scancel", *orphans)
            for job_id in orphans:
                self.lease.end_worker_job(SCHEDULER, job_id)
        return orphans

    def record_new_jobs(self) -> dict[str, str]:
        """Worker jobs SLURMCluster submitted since the last look go into the ledger now (it costs no
        squeue call), so that a driver killed a moment later leaves none that the next one cannot cancel."""
        jobs = {name: job.job_id for name, job in list(self.cluster.workers.items()) if getattr(job, "job_id", None)}
        for job_id in set(jobs.values()) - self.known:
            self.known.add(job_id)
            if self.lease is not None:
                self.lease.record_worker_job(SCHEDULER, job_id)
        return jobs

    def __call__(self) -> None:
        jobs = self.record_new_jobs()
        now = time.monotonic()
        if now - self._last < WATCH_INTERVAL:
            return
        self._last = now
        if not jobs:
            return
        queued = _slurm("squeue", "-h", "-o", "%i %T", "-j", ",".join(jobs.values()))
        if queued.returncode not in (0, 1):
            return  # slurmctld busy: look again next time
        alive = {line.split()[0] for line in queued.stdout.splitlines()
                 if line.split()[1:] and line.split()[1] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")}
        gone = [name for name, job_id in jobs.items() if job_id not in alive]
        if gone:
            # Cancelled while pending, failed to start, or vanished: dask-jobqueue would wait forever.
            log.warning("SLURM worker jobs gone: %s; adaptive scaling replaces them",
                        ", ".join(jobs[name] for name in gone))
            for name in gone:
                if self.lease is not None:
                    self.lease.end_worker_job(SCHEDULER, jobs[name])
            self.cluster.sync(self.cluster.scale_down, gone)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.lease is not None:
            for job_id in self.known:
                self.lease.end_worker_job(SCHEDULER, job_id)


def credentials_parent(config_directory: Path | None) -> Path:
    """Where the worker jobs' TLS credentials go: dask's ``jobqueue.slurm.shared-temp-directory`` when set,
    else next to the run's config file. It must be on a filesystem every worker node sees."""
    import dask.config

    shared = dask.config.get("jobqueue.slurm.shared-temp-directory", None)
    if shared:
        return Path(os.path.expandvars(os.path.expanduser(str(shared))))
    return config_directory if config_directory is not None else Path.cwd()


@contextmanager
def slurm_cluster(
    config: SlurmClusterConfig, lease: GridLease | None, config_directory: Path | None = None,
    withheld: tuple[str, ...] = (),
) -> Iterator[ClusterHandle]:
    import dask.config
    from distributed import Client

    from .archive_workers import archive_workers
    from .base import ARCHIVE_RESOURCE, MODEL_RESOURCE, ClusterHandle

    import_dask_jobqueue()  # before its runner module can take this process's Ctrl-C
    from dask_jobqueue import SLURMCluster

    # null keys are left to dask's jobqueue.slurm config, as for any dask-jobqueue user; pdrflow
    # invents none. cores and memory have no default there: missing, they are refused before any sbatch.
    defaults = dask.config.get("jobqueue.slurm", {})
    cores = config.cores or defaults.get("cores")
    memory = config.memory or defaults.get("memory")
    walltime = config.walltime or defaults.get("walltime")
    unset = [key for key, value in (("cores", cores), ("memory", memory), ("walltime", walltime)) if not value]
    if unset:
        raise ConfigError(f"cluster.{' and cluster.'.join(unset)} not set: give them in the run's config or in "
                          "dask's jobqueue.slurm config (~/.config/dask/jobqueue.yaml)")
    check_request(config, int(cores), str(memory))  # before any sbatch
    prologue = list(config.job_script_prologue or defaults.get("job-script-prologue") or [])
    # pdrflow's own worker-side messages (a retirement, a retried upload) go to the job's log file, next to
    # distributed's and in its format; dask reads this into its logging config when the worker starts.
    prologue.append("export DASK_LOGGING__PDRFLOW=info")
    if dask.config.get("distributed.worker.profile.enabled", True) is False:
        # Worker jobs read their own dask config: pass on the driver's decision (see cli.worker_safety_config).
        prologue.append("export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False")
    given: dict[str, Any] = {key: value for key, value in {
        "queue": config.queue, "account": config.account, "job_extra_directives": config.job_extra_directives,
        "job_script_prologue": prologue or None, "interface": config.interface,
        "local_directory": config.local_directory, "log_directory": config.log_directory,
    }.items() if value is not None}
    for directory in (config.log_directory, config.local_directory):
        owner_only_directory(directory)  # worker logs and spill space: the user's only
    warn_if_dashboard_exposed(config.dashboard_address)
    security = run_security(config.security)
    credentials = None
    if security is not None:
        # dask-jobqueue writes the worker's copy of the key there (each file 0600) for the job scripts to
        # name; a fresh 0700 directory per run, removed at the end.
        credentials = private_directory(credentials_parent(config_directory), ".pdrflow-tls-")
        given.update(security=security, protocol=PROTOCOL, shared_temp_directory=str(credentials))
    # With archive workers, compute workers say so: models run only there (a job's cores bound any of its
    # processes' threads, so the amount never limits them), archivals only on the driver's host.
    model_resources = {MODEL_RESOURCE: 1.0} if config.archive_workers else None
    retirement = worker_retirement(str(walltime))
    resources = ["--resources", f"{MODEL_RESOURCE}={int(cores)}"] if config.archive_workers else []
    try:
        cluster = SLURMCluster(
            cores=cores, memory=memory, processes=config.processes, walltime=walltime, python=sys.executable,
            worker_extra_args=[*defaults.get("worker-extra-args", []), *retirement.worker_args(), *resources,
                               *([] if config.worker_dashboard else ["--no-dashboard"])],
            # null: no dashboard (dask-jobqueue's own default would be every interface's :8787)
            scheduler_options={"dashboard_address": config.dashboard_address} if config.dashboard_address
            else {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            # sbatch exports its environment: not the passwords jobs never use (dask-jobqueue types the class
            # parameter as an instance)
            job_cls=job_class_without(withheld, config.submit_interval),  # type: ignore[arg-type]
            **given,
        )
    except BaseException:
        remove_directory(credentials)
        raise
    watchdog = Watchdog(cluster, lease)
    try:
        orphans = watchdog.cancel_orphans()
        if orphans:
            log.warning("cancelled worker jobs left by a stopped driver: %s", ", ".join(orphans))
        cluster.adapt(minimum_jobs=config.min_jobs, maximum_jobs=config.max_jobs)
        client = Client(cluster)
        try:
            with archive_workers(cluster, config.archive_workers, security):
                yield ClusterHandle(
                    client=client,
                    worker_slots=config.max_jobs * int(cores),
                    shared_scratch=False,
                    dashboard_link=local_dashboard_link(cluster.dashboard_link, config.dashboard_address)
                    if config.dashboard_address else None,
                    maintain=watchdog,
                    model_resources=model_resources,
                    archive_resources={ARCHIVE_RESOURCE: 1.0} if config.archive_workers else None,
                    retirement_drain_seconds=retirement.drain,
                )
        finally:
            client.close()
    finally:
        watchdog.record_new_jobs()  # a grid shorter than one watch interval still records its jobs
        try:
            cluster.close()
        finally:
            watchdog.close()
            _close_credential_files(cluster)
            remove_directory(credentials)


def _close_credential_files(cluster: Any) -> None:
    """dask-jobqueue keeps the worker credential files open (as NamedTemporaryFile, ``_job_<key>``) until the
    cluster is collected; closing them now deletes them before their directory goes, without a warning later."""
    for key in ("ca_file", "cert", "key"):
        handle = getattr(cluster, f"_job_{key}", None)
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass


def start(config: Config, lease: GridLease | None) -> AbstractContextManager[ClusterHandle]:
    """The factory of ``cluster.kind: slurm`` (its ``KIND``): worker credentials go near the config;
    sbatch runs without the passwords worker jobs do not need."""
    assert isinstance(config.cluster, SlurmClusterConfig)
    return slurm_cluster(config.cluster, lease, config.path.parent, withheld_from_workers(config))


def serve_unless_driver(config: Config) -> bool:
    """Called first by `pdrflow run`: every process of this kind drives; dask-jobqueue is imported now, in
    the main thread (see ``jobqueue``)."""
    import_dask_jobqueue()
    return False


def placement(config: SlurmClusterConfig, environ: Mapping[str, str]) -> Placement:
    from .placement import slurm_placement

    return slurm_placement(config.queue)  # every node of the partition the worker jobs would land in


def check(config: Config) -> None:
    assert isinstance(config.cluster, SlurmClusterConfig)
    if config.cluster.min_jobs > config.cluster.max_jobs:
        raise ConfigError("cluster.min_jobs: must not be larger than cluster.max_jobs")
    if config.cluster.archive_workers and config.scratch.staging is None:
        raise ConfigError("cluster.archive_workers: needs scratch.staging, a directory every compute node and this "
                          "host see (a shared filesystem): the outputs are archived from there")


KIND = ClusterKind(config=SlurmClusterConfig, start=start, serve=serve_unless_driver, placement=placement,
                   check=check)  # found by config.kinds
