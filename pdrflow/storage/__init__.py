"""Archive backends: where the archival task puts a model's files."""

from __future__ import annotations

from ..config import LocalStorageConfig, SftpStorageConfig
from .base import Storage, StorageError, StoredFile
from .local import LocalStorage

__all__ = ["Storage", "StorageError", "StoredFile", "open_storage"]


def open_storage(config: LocalStorageConfig | SftpStorageConfig) -> Storage:
    if isinstance(config, LocalStorageConfig):
        return LocalStorage(config.root)
    from .sftp import SftpStorage  # paramiko is only imported where SFTP is used

    return SftpStorage(config)
