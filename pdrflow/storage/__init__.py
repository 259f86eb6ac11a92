"""Archive backends: where the archival task puts a model's files. Each kind is a module here,
named in ``config.KINDS`` with its config model."""

from __future__ import annotations

from ..config import LocalStorageConfig, SftpStorageConfig, kind_factory
from .base import Storage, StorageError, StoredFile

__all__ = ["Storage", "StorageError", "StoredFile", "open_storage"]


def open_storage(config: LocalStorageConfig | SftpStorageConfig) -> Storage:
    """The backend a storage section names (its module imported only now: paramiko for SFTP only)."""
    storage: Storage = kind_factory("storage", config.kind)(config)
    return storage
