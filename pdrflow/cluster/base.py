"""What the driver needs from any cluster: a client and how many tasks can run at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dask.config
from distributed import Client

from ..dashboard.plugin import ROUTES_MODULE

# Worker resources: every model asks for one MODEL_RESOURCE, which only compute workers have; archivals ask
# for ARCHIVE_RESOURCE only when some workers do nothing else (cluster.slurm.archive_workers).
MODEL_RESOURCE = "pdrflow-model"
ARCHIVE_RESOURCE = "pdrflow-archive"
MODEL_TASK_RESOURCES: dict[str, float] = {MODEL_RESOURCE: 1.0}


@dataclass(frozen=True)
class ComputeWorker:
    """The threads and resources of a compute worker process with ``model_slots`` models at once.

    One thread more than slots: the archival of a model is pinned to its worker (the outputs are there), and
    without a free thread it would wait behind the next model, whose run a scheduler had already sent there,
    for a whole model's runtime (hours, for KOSMA-tau). The resource keeps models to the slots."""

    model_slots: int

    @property
    def threads(self) -> int:
        return self.model_slots + 1

    @property
    def resources(self) -> dict[str, float]:
        return {MODEL_RESOURCE: float(self.model_slots)}

    def cli_args(self) -> list[str]:
        """For ``dask worker`` (dask-jobqueue puts its own ``--nthreads`` first; the last one counts)."""
        return ["--nthreads", str(self.threads), "--resources", f"{MODEL_RESOURCE}={self.model_slots}"]


def scheduler_settings() -> dict[str, object]:
    """The dask config every pdrflow scheduler starts with (read when the Scheduler is made).

    The driver owns the retries of a model run lost with its worker, counted per job: Dask must not
    quietly rerun such a task itself (its default reruns it 3 times first), or one model that kills
    its worker would run up to 4 times per driver retry. The pdrflow page joins distributed's own
    HTTP routes, which get the dashboard's prefix from distributed."""
    routes = list(dask.config.get("distributed.scheduler.http.routes", []))
    return {"distributed.scheduler.allowed-failures": 0,
            "distributed.scheduler.http.routes": routes if ROUTES_MODULE in routes else [*routes, ROUTES_MODULE]}


@dataclass
class ClusterHandle:
    client: Client
    worker_slots: int  # tasks that can run at once (sizes the submission window)
    shared_scratch: bool  # True: every worker sees every scratch dir (no pinning needed)
    dashboard_link: str | None
    maintain: Callable[[], None] | None = None  # called from the driver loop every few seconds
    # Dask worker resources the tasks ask for: models only on compute workers (ComputeWorker); archivals only
    # on the archive workers when there are some (cluster.slurm.archive_workers), else None: any worker.
    model_resources: dict[str, float] = field(default_factory=lambda: dict(MODEL_TASK_RESOURCES))
    archive_resources: dict[str, float] | None = None
