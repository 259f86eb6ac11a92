"""Every storage and cluster kind: its config model and the function that opens or starts it.

Config loading, the config reference and the factories (``storage.open_storage``,
``cluster.start_cluster``) read this one table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .models import (
    AllocationClusterConfig,
    LocalClusterConfig,
    LocalStorageConfig,
    SftpStorageConfig,
    SlurmClusterConfig,
)


@dataclass(frozen=True)
class Kind:
    """One kind of a storage or cluster section: its config model and the function that opens or starts
    it, named ``module:function`` and imported only when that kind is used (paramiko loads for SFTP
    only, dask-jobqueue for SLURM only)."""

    model: type[BaseModel]
    factory: str


# Every storage and cluster kind, written once. Config loading, the config reference and the factories
# (storage.open_storage, cluster.start_cluster) read this table. A new kind is its module (its factory), its
# model in models.py with a member of that section's union there (for pydantic and mypy; a test keeps the
# unions equal to this table), a line here and its defaults in pdrflow.yaml.
KINDS: dict[str, dict[str, Kind]] = {
    "storage": {
        "local": Kind(LocalStorageConfig, "pdrflow.storage.local:open_local"),
        "sftp": Kind(SftpStorageConfig, "pdrflow.storage.sftp:open_sftp"),
    },
    "cluster": {
        "local": Kind(LocalClusterConfig, "pdrflow.cluster.local:start"),
        "slurm": Kind(SlurmClusterConfig, "pdrflow.cluster.slurm:start"),
        "allocation": Kind(AllocationClusterConfig, "pdrflow.cluster.allocation:start"),
    },
}


KIND_SECTIONS: tuple[str, ...] = tuple(KINDS)
KIND_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    (section, name): kind.model for section, kinds in KINDS.items() for name, kind in kinds.items()}


def kind_factory(section: str, kind: str) -> Any:
    """The factory of ``section``'s ``kind`` (imported now)."""
    module, function = KINDS[section][kind].factory.split(":")
    return getattr(importlib.import_module(module), function)
