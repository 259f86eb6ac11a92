"""Ctrl-C in a real terminal: one summary line, no worker or nanny tracebacks, no scratch left behind;
and a run's terminal free of library noise (dashboard log lines and errors go to the log file)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from helpers import base_config, cli, ledger_rows, slow_null_home, write_config, write_null_home
from test_terminal import ANSI, _terminal_env

# (output so far, the process) → called every half second while the run goes on
Watcher = Callable[[str, "subprocess.Popen[bytes]"], None]


def drive_in_pty(argv: list[str], cwd: Path, watch: Watcher, timeout: float = 240) -> tuple[int, str]:
    """Like test_terminal.run_in_pty, with ``watch`` looking at the output as it comes (to press Ctrl-C,
    open a dashboard page). The process leads its own process group, as a shell's foreground job does."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = subprocess.Popen(argv, cwd=cwd, env=_terminal_env(), stdin=subprocess.DEVNULL, stdout=terminal,
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


def _grid(tmp_path: Path, seconds: float) -> tuple[Path, Path]:
    home = slow_null_home(tmp_path, write_null_home(tmp_path / "home"), seconds)
    raw = base_config(tmp_path, home=home)
    raw["grid"]["fuv"] = [10.0, 100.0, 1000.0]  # 6 models on 2 workers: three rounds
    return write_config(tmp_path / "grid.yaml", raw), tmp_path / "ledger.sqlite"


def _running(ledger: Path) -> int:
    try:
        return int(ledger_rows(ledger, "select count(*) from jobs where state = 'running'")[0][0])
    except sqlite3.Error:  # not created (or migrated) yet
        return 0


def test_ctrl_c_gives_one_summary_no_tracebacks_and_leaves_no_scratch(tmp_path: Path) -> None:
    config, ledger = _grid(tmp_path, 8.0)
    pressed: list[float] = []

    def press_when_models_run(_output: str, process: subprocess.Popen[bytes]) -> None:
        if not pressed and _running(ledger) >= 2:
            time.sleep(1.0)  # the models are inside pdrexe now, with scratch directories
            pressed.append(time.monotonic())
            ctrl_c(process)

    code, output = drive_in_pty([sys.executable, "-m", "pdrflow", "run", str(config)], tmp_path,
                                press_when_models_run)
    text = ANSI.sub("", output)
    assert pressed, text[-3000:]
    assert code == 130, text[-3000:]
    for noise in ("Traceback", "KeyboardInterrupt", "AssertionError", "Status.init", "distributed."):
        assert noise not in text, text[-4000:]
    summary = re.search(r"interrupted: (\d+) models requeued, (\d+) archived.*nothing left running", text)
    assert summary, text[-3000:]
    assert int(summary[1]) + int(summary[2]) == 6, summary[0]
    assert not re.search(r"^(pending|running) 100_", text, re.M), text[-3000:]  # no line per job without -v
    assert ledger_rows(ledger, "select count(*) from jobs where state = 'running'") == [(0,)]
    # the interrupted models' scratch directories are gone: nothing there belongs to a job any more
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == []

    done = cli("run", str(config))  # continue: everything archived, scratch empty again
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == []


def test_ctrl_c_with_verbose_lists_the_jobs(tmp_path: Path) -> None:
    config, ledger = _grid(tmp_path, 8.0)
    pressed: list[bool] = []

    def press(_output: str, process: subprocess.Popen[bytes]) -> None:
        if not pressed and _running(ledger) >= 2:
            pressed.append(True)
            time.sleep(1.0)
            ctrl_c(process)

    code, output = drive_in_pty([sys.executable, "-m", "pdrflow", "-v", "run", str(config)], tmp_path, press)
    text = ANSI.sub("", output)
    assert code == 130, text[-3000:]
    assert len(re.findall(r"^pending 100_\S+: ", text, re.M)) >= 4, text[-3000:]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_dashboard_logs_and_errors_go_to_the_log_file_not_the_terminal(tmp_path: Path) -> None:
    config, _ = _grid(tmp_path, 2.0)
    visited: list[int] = []

    def browse(output: str, _process: subprocess.Popen[bytes]) -> None:
        link = re.search(r"Dask dashboard: (http://\S+)/status", ANSI.sub("", output))
        if link and not visited:
            base = link[1]
            # pages a user opens: the status page, the grid page, and one that makes distributed log an error
            visited.extend(_get(f"{base}/{page}") for page in ("status", "pdrflow", "info/logs/nosuch.html"))

    code, output = drive_in_pty([sys.executable, "-m", "pdrflow", "run", str(config)], tmp_path, browse)
    text = ANSI.sub("", output)
    assert code == 0, text[-3000:]
    assert visited[:2] == [200, 200], visited
    log_file = tmp_path / "pdrflow-testgrid.log"
    assert f"log: {log_file}" in text  # told once, at the start
    assert text.count("log: ") == 1
    log = log_file.read_text()
    # the dashboard's INFO line and distributed's error are in the log file only
    assert "pdrflow dashboard: grid 'testgrid'" in log
    assert "broadcast to nosuch failed" in log, log
    assert "pdrflow dashboard:" not in text and "broadcast to nosuch" not in text and "Traceback" not in text, text
    assert " INFO " not in text and "ERROR" not in text, text[-3000:]
