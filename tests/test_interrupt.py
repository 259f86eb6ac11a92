"""Ctrl-C in a real terminal: one summary line, no worker or nanny tracebacks, no scratch left behind;
and a run's terminal free of library noise (dashboard log lines and errors go to the log file)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers import base_config, cli, ledger_rows, slow_null_home, write_config, write_null_home
from terminal import ANSI, ctrl_c, run_in_pty


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

    code, output = run_in_pty([sys.executable, "-m", "pdrflow", "run", str(config)], tmp_path,
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

    code, output = run_in_pty([sys.executable, "-m", "pdrflow", "-v", "run", str(config)], tmp_path, press)
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

    code, output = run_in_pty([sys.executable, "-m", "pdrflow", "run", str(config)], tmp_path, browse)
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
