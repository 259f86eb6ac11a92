"""Processes the tests start, watch and stop by PID (psutil reads /proc for us)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds no port and no files; only its parent's wait() is missing)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (servers fork one per connection, plus helpers)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of ``pids`` runs; False when some still do after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop(pids: list[int], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig``; whatever still runs after ``timeout`` gets SIGKILL. Returns once all are gone."""
    signal_all(pids, sig)
    wait_or_kill(pids, timeout)


def wait_or_kill(pids: list[int], timeout: float) -> None:
    """Wait for ``pids`` to exit; SIGKILL whatever still runs after ``timeout``. Returns once all are gone."""
    if not wait_gone(pids, timeout):
        signal_all(pids, signal.SIGKILL)
        if not wait_gone(pids, 10):
            raise TimeoutError(f"processes {pids} survived SIGKILL for 10 s")


def spawned_children(parent: int) -> list[int]:
    """Dask worker processes a driver started with multiprocessing's spawn."""
    try:
        children = psutil.Process(parent).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if any("spawn_main" in arg for arg in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def kosma_steps(scratch_root: Path) -> list[tuple[int, int, str]]:
    """(pid, parent pid, cwd) of every KOSMA-tau step (``./pdrexe``/``./onionexe``) running below ``scratch_root``.

    The parent of a step is the Dask worker process that runs the model: kill it to kill the worker.
    """
    root = str(Path(scratch_root).resolve()) + os.sep
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "ppid"]):
        cwd, cmdline = process.info["cwd"] or "", process.info["cmdline"] or []
        if cwd.startswith(root) and any(arg in ("./pdrexe", "./onionexe") for arg in cmdline):
            found.append((process.pid, process.info["ppid"], cwd))
    return found
