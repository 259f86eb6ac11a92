"""The local-directory backend against real filesystems, including full and read-only ones."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdrflow.storage import StorageError
from pdrflow.storage.local import LocalStorage


def _staged(path: Path, size: int) -> tuple[Path, int, str]:
    data = os.urandom(size)
    path.write_bytes(data)
    return path, size, hashlib.sha256(data).hexdigest()


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs: writes past it fail with ENOSPC."""
    root = tmp_path / "tiny"
    root.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root))
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False, timeout=30)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ro"
    root.mkdir()
    _mount("--bind", str(root), str(root))
    _mount("-o", "remount,ro,bind", str(root))
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False, timeout=30)


def test_put_is_verified_and_skips_identical_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    source, size, digest = _staged(tmp_path / "a.bin", 300_000)
    stored = storage.put(source, "g/pdrgrid/a.bin", size=size, sha256=digest)
    target = tmp_path / "archive" / "g" / "pdrgrid" / "a.bin"
    assert target.read_bytes() == source.read_bytes()
    assert (stored.size, stored.sha256) == (size, digest)
    assert storage.stat("g/pdrgrid/a.bin") == size and storage.checksum("g/pdrgrid/a.bin") == digest
    inode = target.stat().st_ino
    storage.put(source, "g/pdrgrid/a.bin", size=size, sha256=digest)
    assert target.stat().st_ino == inode  # already there with these bytes: not written again


def test_changed_source_never_reaches_the_final_path(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    source, size, _ = _staged(tmp_path / "a.bin", 1000)
    with pytest.raises(StorageError, match="changed while archiving"):
        storage.put(source, "g/a.bin", size=size, sha256="0" * 64)
    assert list((tmp_path / "archive" / "g").iterdir()) == []  # no final file, no temporary


def test_unsafe_paths_are_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    source, size, digest = _staged(tmp_path / "a.bin", 10)
    for path in ("../escape", "/abs/path", "g/../../x", "g//x", ""):
        with pytest.raises(StorageError, match="unsafe archive path"):
            storage.put(source, path, size=size, sha256=digest)


def test_disk_full_leaves_no_partial_file(tmp_path: Path, tiny_fs: Path) -> None:
    storage = LocalStorage(tiny_fs)
    small, size, digest = _staged(tmp_path / "small.bin", 100_000)
    storage.put(small, "g/small.bin", size=size, sha256=digest)
    big, size, digest = _staged(tmp_path / "big.bin", 3_000_000)
    with pytest.raises(StorageError, match="No space left on device") as caught:
        storage.put(big, "g/big.bin", size=size, sha256=digest)
    assert not caught.value.transient
    assert sorted(p.name for p in (tiny_fs / "g").iterdir()) == ["small.bin"]  # nothing partial, no temporary


def test_read_only_filesystem_is_a_clear_persistent_error(tmp_path: Path, read_only_dir: Path) -> None:
    storage = LocalStorage(read_only_dir)
    source, size, digest = _staged(tmp_path / "a.bin", 10)
    with pytest.raises(StorageError, match="Read-only file system") as caught:
        storage.put(source, "g/a.bin", size=size, sha256=digest)
    assert not caught.value.transient
    assert list(read_only_dir.iterdir()) == []


def test_a_probe_killed_mid_put_leaves_nothing_the_next_probe_does_not_remove(tmp_path: Path) -> None:
    """The probe's file is named like a temporary; ``put`` writes a temporary of that name first. A driver
    killed between the two (as the fault matrix's kill -9 once was, during the preflight) left
    ``..pdrflow-probe.pdrflow-<id>.part.pdrflow-<id>.part``: the next run's probe removes it."""
    root = tmp_path / "archive"
    grid = root / "testgrid"
    grid.mkdir(parents=True)
    killed = grid / f"..pdrflow-probe.pdrflow-{'a' * 32}.part.pdrflow-{'b' * 32}.part"
    killed.write_bytes(b"half a probe")
    ours_not = grid / ".pdrflow-probes.txt.part"  # not a name pdrflow writes: left alone
    ours_not.write_bytes(b"someone else's")
    LocalStorage(root).probe("testgrid")
    assert sorted(p.name for p in grid.iterdir()) == [ours_not.name]
