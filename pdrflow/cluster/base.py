"""What the driver needs from any cluster: a client and how many tasks can run at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dask.config
from distributed import Client

from ..dashboard.plugin import ROUTES_MODULE

# Worker resources when some workers only archive (cluster.slurm.archive_workers): models ask for the first,
# archivals for the second, so that neither runs where it must not.
MODEL_RESOURCE = "pdrflow-model"
ARCHIVE_RESOURCE = "pdrflow-archive"


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
    # Dask worker resources the tasks must ask for when some workers only archive (cluster.slurm.archive_workers):
    # models never run on those, archivals only there. None: any worker runs either.
    model_resources: dict[str, float] | None = None
    archive_resources: dict[str, float] | None = None
    # Seconds a retiring worker takes no model but still archives the outputs it holds (tasks/retirement.py)
    retirement_drain_seconds: float = 0.0
