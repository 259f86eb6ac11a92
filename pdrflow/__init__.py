"""pdrflow: trustworthy grids of KOSMA-tau PDR models on SLURM clusters, with Dask.

From Python (a notebook): ``pdrflow.Grid.open("grid.yaml").submit()``; see :mod:`pdrflow.api`.
"""

from .api import Grid, GridRun, JobFailed, JobResult

__all__ = ["Grid", "GridRun", "JobFailed", "JobResult"]
