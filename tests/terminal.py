"""A real pseudo-terminal for the tests of what a user sees: the one way the tests run a command in one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# (output so far, the process) → called every half second while the command runs (to press Ctrl-C, open a page)
Watcher = Callable[[str, "subprocess.Popen[bytes]"], None]


def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    return {**env, "TERM": "xterm-256color"}


def run_in_pty(argv: list[str], cwd: Path, watch: Watcher | None = None, timeout: float = 240) -> tuple[int, str]:
    """Run argv with a terminal 160 columns wide as stdout/stderr; return (exit code, output).

    The process leads its own process group, as a shell's foreground job does (Ctrl-C reaches the group)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = subprocess.Popen(argv, cwd=cwd, env=terminal_env(), stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=terminal, start_new_session=True)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
            if watch is not None:
                watch(b"".join(chunks).decode("utf-8", "replace"), process)
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(controller)
    return code, b"".join(chunks).decode("utf-8", "replace")


def ctrl_c(process: subprocess.Popen[bytes]) -> None:
    """What the terminal does on Ctrl-C: SIGINT to the whole foreground process group (workers included)."""
    os.killpg(process.pid, signal.SIGINT)
