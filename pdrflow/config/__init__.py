"""The run configuration: models (``models.py``), the kinds of storage and cluster (``kinds.py``), reading
a file (``loading.py``) with its checks (``checks.py``), environment overrides (``env.py``) and one-line
error messages (``messages.py``). Every default is in ``pdrflow/pdrflow.yaml``.
"""

from ..errors import ConfigError
from .kinds import KINDS, Kind, kind_factory
from .loading import load_config
from .models import (
    DB_PASSWORD_ENV,
    DEFAULTS_FILE,
    SFTP_PASSWORD_ENV,
    AllocationClusterConfig,
    ChemistryMapping,
    ClusterConfig,
    Config,
    DatabaseConfig,
    GridConfig,
    KosmaTauConfig,
    LinebtMapping,
    LocalClusterConfig,
    LocalStorageConfig,
    ResultsConfig,
    RunConfig,
    ScratchConfig,
    SftpStorageConfig,
    SlurmClusterConfig,
    StorageConfig,
    StructureMapping,
    archive_modes,
    default_scratch_root,
)

__all__ = [
    "DB_PASSWORD_ENV", "DEFAULTS_FILE", "KINDS", "SFTP_PASSWORD_ENV", "AllocationClusterConfig", "ChemistryMapping",
    "ClusterConfig", "Config", "ConfigError", "DatabaseConfig", "GridConfig", "Kind", "KosmaTauConfig",
    "LinebtMapping", "LocalClusterConfig", "LocalStorageConfig", "ResultsConfig", "RunConfig", "ScratchConfig",
    "SftpStorageConfig", "SlurmClusterConfig", "StorageConfig", "StructureMapping", "archive_modes",
    "default_scratch_root", "kind_factory", "load_config",
]
