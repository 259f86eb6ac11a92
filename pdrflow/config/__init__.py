"""The run configuration: the shared section types (``sections.py``), the kinds of storage and cluster
found from their modules (``kinds.py``), the models (``models.py``), reading a file (``loading.py``) with
its checks (``checks.py``), environment overrides (``env.py``) and one-line error messages
(``messages.py``). Every default is in ``pdrflow/pdrflow.yaml``.

The names below are imported when first asked for: a kind module (``pdrflow/storage/<kind>.py``) imports
``pdrflow.config.sections`` while ``kinds`` may still be finding the kinds, so this package must not
import the models or the kinds itself. A kind's config model is found here by its class name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import sections as _sections  # registers the shipped defaults with dask.config, as importing this always did

if TYPE_CHECKING:
    # The shipped kinds' models under their names, for callers' type checking only: at run time any kind's model
    # is found by its class name (__getattr__), and nothing in pdrflow imports one from here.
    from ..cluster.allocation import AllocationClusterConfig
    from ..cluster.local import LocalClusterConfig
    from ..cluster.slurm import SlurmClusterConfig
    from ..storage.local import LocalStorageConfig
    from ..storage.sftp import SftpStorageConfig
    from .kinds import KIND_MODELS, KIND_SECTIONS, KINDS, Kind, kind_factory
    from .loading import load_config
    from .models import (
        ChemistryMapping,
        ClusterConfig,
        Config,
        DatabaseConfig,
        GridConfig,
        KosmaTauConfig,
        LinebtMapping,
        ResultsConfig,
        RunConfig,
        ScratchConfig,
        StorageConfig,
        StructureMapping,
        default_scratch_root,
    )
    from .sections import (
        DB_PASSWORD_ENV,
        DEFAULTS_FILE,
        SFTP_PASSWORD_ENV,
        ClusterKind,
        KindSection,
        StorageKind,
        archive_modes,
    )

_HOMES = {
    **dict.fromkeys(("KIND_MODELS", "KIND_SECTIONS", "KINDS", "Kind", "kind_factory"), ".kinds"),
    "load_config": ".loading",
    **dict.fromkeys(("ChemistryMapping", "ClusterConfig", "Config", "DatabaseConfig", "GridConfig", "KosmaTauConfig",
                     "LinebtMapping", "ResultsConfig", "RunConfig", "ScratchConfig", "StorageConfig",
                     "StructureMapping", "default_scratch_root"), ".models"),
}
_SECTIONS = ("DB_PASSWORD_ENV", "DEFAULTS_FILE", "SFTP_PASSWORD_ENV", "ClusterKind", "KindSection", "StorageKind",
             "archive_modes")


def __getattr__(name: str) -> Any:
    if name in _SECTIONS:
        return getattr(_sections, name)
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    from .kinds import KIND_MODELS

    for model in KIND_MODELS.values():  # LocalStorageConfig, SftpStorageConfig, SlurmClusterConfig, ...
        if model.__name__ == name:
            return model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DB_PASSWORD_ENV", "DEFAULTS_FILE", "KINDS", "KIND_MODELS", "KIND_SECTIONS", "SFTP_PASSWORD_ENV",
    "AllocationClusterConfig", "ChemistryMapping", "ClusterConfig", "ClusterKind", "Config", "ConfigError",
    "DatabaseConfig", "GridConfig", "Kind", "KindSection", "KosmaTauConfig", "LinebtMapping", "LocalClusterConfig",
    "LocalStorageConfig", "ResultsConfig", "RunConfig", "ScratchConfig", "SftpStorageConfig", "SlurmClusterConfig",
    "StorageConfig", "StorageKind", "StructureMapping", "archive_modes", "default_scratch_root", "kind_factory",
    "load_config",
]
