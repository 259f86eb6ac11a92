"""Archive backends: where the archival task puts a model's files. Kind ``K`` is the module
``pdrflow.storage.K`` (with its defaults under ``storage.K`` in pdrflow.yaml), declaring
``KIND = StorageKind(config=..., open=...)``; ``config.kinds`` finds it.

Light at import: config loading imports every kind module, and with it this package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Storage, StorageError, StoredFile

if TYPE_CHECKING:
    from ..config import StorageConfig

__all__ = ["Storage", "StorageError", "StoredFile", "open_storage"]


def open_storage(config: StorageConfig) -> Storage:
    """The backend a storage section names (paramiko is imported by the SFTP backend only once it opens)."""
    from ..config.kinds import STORAGE_KINDS

    return STORAGE_KINDS[config.kind].open(config)
