"""What the driver needs from any cluster: a client and how many tasks can run at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distributed import Client

# The driver owns the retries of a model run lost with its worker, counted per job: Dask must not
# quietly rerun such a task itself (its default reruns it 3 times first), or one model that kills
# its worker would run up to 4 times per driver retry.
SCHEDULER_SETTINGS: dict[str, object] = {"distributed.scheduler.allowed-failures": 0}


@dataclass
class ClusterHandle:
    client: Client
    worker_slots: int  # tasks that can run at once (sizes the submission window)
    shared_scratch: bool  # True: every worker sees every scratch dir (no pinning needed)
    dashboard_link: str | None
    maintain: Callable[[], None] | None = None  # called from the driver loop every few seconds
