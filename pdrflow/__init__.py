"""pdrflow: trustworthy grids of KOSMA-tau PDR models on SLURM clusters, with Dask.

From Python (a notebook): ``pdrflow.Grid.open("grid.yaml").submit()``; see :mod:`pdrflow.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Grid, GridRun, JobFailed, JobResult

__all__ = ["Grid", "GridRun", "JobFailed", "JobResult"]


def __getattr__(name: str) -> Any:
    # The notebook API pulls in dask and pydantic: loaded on first use, so light modules
    # (pdrflow.states, the status command) stay light.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pdrflow' has no attribute {name!r}")
