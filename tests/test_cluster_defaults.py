"""pdrflow invents no SLURM job size: what the run's config leaves null, dask's jobqueue.slurm config decides."""

from __future__ import annotations

from pathlib import Path

import dask.config
import dask_jobqueue  # noqa: F401  (its jobqueue.slurm defaults loaded before any dask.config.set below)
import pytest
from helpers import base_config, write_config

from pdrflow.cluster.slurm import slurm_cluster
from pdrflow.config import SlurmClusterConfig, load_config
from pdrflow.errors import ConfigError


def _slurm_section(tmp_path: Path, null_home: Path) -> SlurmClusterConfig:
    settings = base_config(tmp_path, home=null_home)
    settings["cluster"] = {"kind": "slurm"}
    config = load_config(write_config(tmp_path / "run.yaml", settings))
    assert isinstance(config.cluster, SlurmClusterConfig)
    return config.cluster


def test_cores_and_memory_missing_everywhere_are_refused_before_any_sbatch(tmp_path: Path, null_home: Path) -> None:
    section = _slurm_section(tmp_path, null_home)
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}), \
            pytest.raises(ConfigError, match=r"cluster\.cores and cluster\.memory not set.*jobqueue\.slurm"):
        with slurm_cluster(section, None):
            pass  # pragma: no cover - refused before a cluster exists


def test_dask_jobqueue_config_fills_what_the_run_leaves_null(tmp_path: Path, null_home: Path) -> None:
    section = _slurm_section(tmp_path, null_home)
    # cores and memory from dask's config get past pdrflow's own check to SLURM's (no scontrol here:
    # that is the next refusal, so the job size was accepted).
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "2GB"}), \
            pytest.raises(ConfigError) as refused:
        with slurm_cluster(section, None):
            pass  # pragma: no cover
    assert "not set" not in str(refused.value)
