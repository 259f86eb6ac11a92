"""The time a grid still needs, from how long its models really take (the terminal and the page).

Completions per wall second since the start badly underestimate a grid's remaining time: the
first minutes finish nothing, then a whole window of models ends at once. What a model costs is
known instead: the seconds it keeps a worker slot (its run plus its archival). With ``slots``
worker slots busy, the remaining models need ``remaining × mean cost ÷ slots``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing observed yet
    rate: float | None  # models per second with the slots busy

    def eta_text(self) -> str:
        return "-:--:--" if self.seconds is None else str(timedelta(seconds=round(self.seconds)))

    def rate_text(self) -> str:
        if self.rate is None:
            return ""
        # a real grid runs hours per model: per hour then, else 0.00 models/s says nothing
        return f"{self.rate:.2f} models/s" if self.rate >= 0.01 else f"{self.rate * 3600:.2f} models/h"


def mean_cost(model_seconds: Sequence[float], archive_seconds: Sequence[float]) -> float | None:
    """Mean seconds a model keeps a slot: mean run + mean archival (None until a run was observed)."""
    runs = [s for s in model_seconds if s > 0]
    if not runs:
        return None
    archivals = [s for s in archive_seconds if s >= 0]
    return statistics.fmean(runs) + (statistics.fmean(archivals) if archivals else 0.0)


def estimate(remaining: int, cost: float | None, slots: int) -> Estimate:
    """``remaining`` models at ``cost`` seconds each on ``slots`` worker slots (threads × workers).

    Fewer models than slots keep only that many slots busy. The rate is what the busy slots finish
    per second."""
    if cost is None or cost <= 0 or slots < 1:
        return Estimate(0.0 if remaining <= 0 else None, None)
    if remaining <= 0:
        return Estimate(0.0, slots / cost)
    busy = min(slots, remaining)
    return Estimate(remaining * cost / busy, busy / cost)
