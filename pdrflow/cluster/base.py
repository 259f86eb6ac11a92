"""What the driver needs from any cluster: a client and how many tasks can run at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dask.config
from distributed import Client

from ..dashboard.plugin import ROUTES_MODULE

# Dask worker resources. Every model asks for one MODEL_RESOURCE; archivals ask for ARCHIVE_RESOURCE only
# when some workers only archive (cluster.slurm.archive_workers), so that neither runs where it must not.
MODEL_RESOURCE = "pdrflow-model"
ARCHIVE_RESOURCE = "pdrflow-archive"


def model_worker(models: int) -> tuple[int, dict[str, float]]:
    """Threads and resources of a worker that runs ``models`` models at once: one thread more than models.

    An archival is pinned to the worker holding its outputs, and the scheduler has often sent that worker
    its next model already: without a spare thread the archival waits for the whole next model. The models'
    MODEL_RESOURCE (``models`` of it) keeps them off the spare thread; an archival leaves it once started
    (``secede``)."""
    return models + 1, {MODEL_RESOURCE: float(models)}


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
    # Dask worker resources the tasks ask for: a model one MODEL_RESOURCE (model_worker above); an archival,
    # when some workers only archive (cluster.slurm.archive_workers), one ARCHIVE_RESOURCE, else none.
    model_resources: dict[str, float] = field(default_factory=lambda: {MODEL_RESOURCE: 1.0})
    archive_resources: dict[str, float] | None = None
