"""One exit-code contract for every command (README "Exit codes"), checked command by command:
0 all good, 1 some jobs failed or archived files damaged, 2 bad input or nothing to look at
(a grid never run), 130 interrupted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import base_config, cli, files_under, ledger_rows, write_config

from pdrflow.cli import build_parser
from pdrflow.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

FAILED = "100_40_-10_20_00"  # density 1e4, FUV 100: the model the stand-in is told to fail
ARCHIVED = "100_30_-10_10_00"


def _commands() -> set[str]:
    return set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def _argv(command: str, config: Path, out: Path) -> list[str]:
    """One invocation of each command that reads a pdrflow config."""
    return {
        "run": ["run", str(config)], "resume": ["resume", str(config)], "resubmit": ["resubmit", str(config)],
        "list": ["list", str(config)], "status": ["status", str(config)], "show": ["show", str(config), ARCHIVED],
        "verify": ["verify", str(config)], "report": ["report", str(config), "--out", str(out)],
        "export": ["export", str(config), "--out", str(out)], "db": ["db", "current", str(config)],
        "clean": ["clean", str(config)],
    }[command]


CONFIG_COMMANDS = ("run", "resume", "resubmit", "list", "status", "show", "verify", "report", "export", "db", "clean")


def test_the_contract_covers_every_command() -> None:
    assert _commands() == {*CONFIG_COMMANDS, "migrate"}, "a new command: add it to the contract tests and README"


# ---- 2: bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_a_missing_config_is_exit_2_for_every_command(tmp_path: Path, command: str) -> None:
    done = cli(*_argv(command, tmp_path / "nope.yaml", tmp_path / "out"))
    assert done.returncode == EXIT_BAD_INPUT, (command, done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [f"pdrflow: error: {tmp_path / 'nope.yaml'}: config file not found"]
    assert "Traceback" not in done.stdout + done.stderr


def test_migrate_of_a_missing_config_is_exit_2(tmp_path: Path) -> None:
    done = cli("migrate", str(tmp_path / "old.yaml"), "--out", str(tmp_path / "new.yaml"))
    assert done.returncode == EXIT_BAD_INPUT, done.stdout + done.stderr
    assert not (tmp_path / "new.yaml").exists()


def test_an_unknown_command_or_argument_is_exit_2(tmp_path: Path) -> None:
    assert cli("frobnicate").returncode == EXIT_BAD_INPUT
    assert cli("status", str(tmp_path / "x.yaml"), "--jsn").returncode == EXIT_BAD_INPUT


# ---- 2: nothing to look at (a grid never run) --------------------------------------------------------


def test_a_grid_never_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "grid.yaml", base_config(run_dir, home=None))
    codes = {}
    for command in ("status", "show", "verify", "report", "export", "db"):
        done = cli(*_argv(command, config, tmp_path / f"out-{command}"))
        codes[command] = done.returncode
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (command, done.stderr)  # one line saying why
    json_status = cli("status", str(config), "--json")
    codes["status --json"] = json_status.returncode
    assert json.loads(json_status.stdout)["total"] == 0
    assert codes == dict.fromkeys(codes, EXIT_BAD_INPUT), codes
    # Listing the grid and planning its run read only the config: there is something to look at. Cleaning
    # a grid that never ran finds nothing to remove, which is not an error.
    for argv in (["list", str(config)], ["run", str(config), "--dry-run"], ["resubmit", str(config), "--dry-run"],
                 ["clean", str(config)]):
        done = cli(*argv)
        assert done.returncode == EXIT_OK, (argv, done.stdout, done.stderr)
    assert not run_dir.exists(), files_under(run_dir)  # none of them created a ledger, archive or scratch
    assert not (tmp_path / "out-report").exists() and not (tmp_path / "out-export").exists()  # nor an output dir


# ---- a grid that ran: 0 where all is well, 1 where jobs failed or files are damaged -------------------


@dataclass(frozen=True)
class Grid:
    run_dir: Path
    config: Path


@pytest.fixture(scope="module")
def failed_grid(tmp_path_factory: pytest.TempPathFactory) -> Grid:
    """Four stand-in models, three archived and one failed_model (as in tests/test_report.py)."""
    run_dir = tmp_path_factory.mktemp("exit-codes")
    failing = base_config(run_dir, home=None)
    failing["grid"].update(density=[1.0e4], fuv=[100.0])
    done = cli("run", str(write_config(run_dir / "failing.yaml", failing)), env={"PDRFLOW_STANDIN_FAIL": "pdr"})
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    config = write_config(run_dir / "grid.yaml", base_config(run_dir, home=None))
    done = cli("run", str(config))
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr  # `run`: 1, the failed model stays failed
    assert dict(ledger_rows(run_dir / "ledger.sqlite", "select name, state from jobs"))[FAILED] == "failed_model"
    return Grid(run_dir, config)


@pytest.mark.slow
def test_a_grid_with_a_failed_job(failed_grid: Grid, tmp_path: Path) -> None:
    config = str(failed_grid.config)
    expected = {
        ("status", config): EXIT_FAILED,
        ("status", config, "--json"): EXIT_FAILED,
        ("show", config, FAILED): EXIT_OK,  # showing a failed job is showing it
        ("show", config, ARCHIVED): EXIT_OK,
        ("verify", config): EXIT_OK,  # every archived file intact
        ("report", config, "--out", str(tmp_path / "report")): EXIT_OK,  # written; the failure is drawn on it
        ("export", config, "--out", str(tmp_path / "export")): EXIT_FAILED,  # the model set refused for a hole
        ("db", "current", config): EXIT_OK,
        ("list", config): EXIT_OK,
        ("run", config, "--dry-run"): EXIT_OK,
        ("resubmit", config, "--dry-run"): EXIT_OK,
        ("clean", config, "--dry-run"): EXIT_OK,
    }
    codes = {argv: cli(*argv).returncode for argv in expected}
    assert codes == expected
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.slow
def test_unknown_job_is_exit_2_and_damaged_archive_is_exit_1(failed_grid: Grid) -> None:
    assert cli("show", str(failed_grid.config), "100_30_-10_10_01").returncode == EXIT_BAD_INPUT
    victim = next(p for p in files_under(failed_grid.run_dir / "archive") if p.name.startswith("TEXTOUT"))
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"flipped")
        done = cli("verify", str(failed_grid.config))
        assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
        assert "mismatched" in done.stdout
    finally:
        victim.write_bytes(original)
    assert cli("verify", str(failed_grid.config)).returncode == EXIT_OK


def test_pending_jobs_are_not_failures(tmp_path: Path) -> None:
    """A registered grid nobody ran yet (or one running now): `status` 0, not 1."""
    from pdrflow.cli.listing import _grid_specs
    from pdrflow.config import load_config
    from pdrflow.ledger.open import open_ledger

    config_path = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=None))
    config = load_config(config_path)
    ledger = open_ledger(config.database)
    try:
        ledger.register_grid(config.grid.name, _grid_specs(config))  # what `pdrflow run` does first
    finally:
        ledger.close()
    done = cli("status", str(config_path), "--json")
    assert json.loads(done.stdout)["counts"] == {"pending": 4}
    assert done.returncode == EXIT_OK, done.stderr
    assert cli("verify", str(config_path)).returncode == EXIT_OK  # nothing archived, nothing damaged


# ---- 130: interrupted ---------------------------------------------------------------------------


def test_ctrl_c_in_a_command_waiting_on_the_database_is_130(tmp_path: Path) -> None:
    """A database server that accepts and never answers: `pdrflow status` waits; Ctrl-C ends it with 130
    and one line, not a traceback. (`pdrflow run`'s 130: tests/test_pipeline.py, test_ctrl_c_leaves_nothing_running.)"""
    pytest.importorskip("psycopg")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://pdrflow@127.0.0.1:{port}/pdrflow"
        config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=None, database={"url": url}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDRFLOW")}
        process = subprocess.Popen([sys.executable, "-m", "pdrflow", "status", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            silent.settimeout(60)
            connection, _ = silent.accept()  # the command is inside main(), connecting: now Ctrl-C
            time.sleep(0.5)
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
            connection.close()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    assert process.returncode == EXIT_INTERRUPTED, (process.returncode, stdout, stderr)
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
