"""Which filesystem a path lives on, from ``/proc/self/mountinfo`` (standard library only).

SQLite's WAL journal keeps its index in shared memory (the ``-shm`` file, mmapped): every process
using the database must be on one host, and the filesystem must give real mmap coherence and
locks. Network filesystems (NFS, Lustre, GPFS, CephFS, BeeGFS, CIFS, sshfs, ...) give neither
across hosts, so the ledger must know when its file is on one (``is_network_filesystem``).

Not Linux, or no ``/proc``: nothing is known and nothing is reported as a network filesystem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

# Kernel type names as mountinfo shows them (FUSE filesystems as ``fuse.<subtype>``). One table: a type
# missing here is taken for local.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "ceph", "cephfs", "fuse.ceph", "fuse.ceph-fuse", "beegfs", "fuse.beegfs",
    "glusterfs", "fuse.glusterfs", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "sshfs", "afs", "openafs",
    "pvfs2", "orangefs", "ocfs2", "gfs2", "panfs", "wekafs", "fuse.quobyte", "quobyte", "fuse.moosefs",
    "fuse.mfs", "fuse.lizardfs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "davfs",
    "fuse.davfs2", "coda", "ncpfs", "fuse.cvmfs", "fuse.irods", "fuse.xtreemfs",
})


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mountinfo paths as ``\\ooo`` octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in its order (a later mount on the same point covers an earlier one).

    A line: ``id parent major:minor root mount-point options [optional fields...] - fstype source super-options``.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue  # not a mountinfo line
        separator = fields.index("-", 6)
        if len(fields) < separator + 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[separator + 1], _unescape(fields[separator + 2])))
    return mounts


def _existing(path: Path) -> Path:
    """The path itself, with symlinks resolved, or its nearest existing parent (a file not created yet)."""
    resolved = Path(os.path.realpath(path))
    while not resolved.exists() and resolved != resolved.parent:
        resolved = resolved.parent
    return resolved


def _contains(mount_point: str, path: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mount_of(path: str | os.PathLike[str], mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount ``path`` lives on: the longest mount point containing it (the last one listed if several
    share that point); None when mountinfo cannot be read."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    target = str(_existing(Path(path)))
    best: Mount | None = None
    for mount in parse_mountinfo(text):
        if _contains(mount.mount_point, target) and (best is None or len(mount.mount_point) >= len(best.mount_point)):
            best = mount
    return best


def filesystem_type(path: str | os.PathLike[str], mountinfo: Path = MOUNTINFO) -> str | None:
    """The kernel's type name of the filesystem ``path`` lives on (``ext4``, ``nfs4``, ``fuse.sshfs``), or None."""
    mount = mount_of(path, mountinfo)
    return mount.fstype if mount is not None else None


def is_network_filesystem(path: str | os.PathLike[str], mountinfo: Path = MOUNTINFO) -> bool:
    return filesystem_type(path, mountinfo) in NETWORK_FILESYSTEMS
