"""Archive backends: where the archival task puts a model's files."""

from __future__ import annotations

from ..config import LocalStorageConfig, SftpStorageConfig, archive_modes
from .base import Storage, StorageError, StoredFile
from .local import LocalStorage

__all__ = ["Storage", "StorageError", "StoredFile", "open_storage"]


def open_storage(config: LocalStorageConfig | SftpStorageConfig) -> Storage:
    """The backend a storage section names; ``file_mode`` / ``dir_mode`` go with it (SFTP reads them from its config)."""
    if isinstance(config, LocalStorageConfig):
        file_mode, dir_mode = archive_modes(config)
        return LocalStorage(config.root, file_mode=file_mode, dir_mode=dir_mode)
    from .sftp import SftpStorage  # paramiko is only imported where SFTP is used

    return SftpStorage(config)
