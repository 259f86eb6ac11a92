"""What the driver needs from any cluster: a client and how many tasks can run at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distributed import Client


@dataclass
class ClusterHandle:
    client: Client
    worker_slots: int  # tasks that can run at once (sizes the submission window)
    shared_scratch: bool  # True: every worker sees every scratch dir (no pinning needed)
    dashboard_link: str | None
    maintain: Callable[[], None] | None = None  # called from the driver loop every few seconds
