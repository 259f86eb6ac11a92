"""What the scientist sees in a terminal: `pdrflow run` progress and `pdrflow status`, in a real pseudo-terminal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import base_config, cli, status, write_config, write_null_home
from terminal import ANSI, run_in_pty

from pdrflow.status import FailedJob, GridStatus, failure_cause

# Fails the models at density 1e4 (archive names N_40_...): the scratch dir carries the job's name.
FAILING_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
case "$(pwd)" in *_40_-*) echo "null pdrexe: density 1e4 is not converging (iteration 2391)"; exit 7;; esac
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do echo "$f" > "pdroutput/$f"; done
echo mcdrt > Out/mrt.dat
"""


def test_progress_and_status_in_a_terminal(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    (home / "pdrexe").write_text(FAILING_PDR)
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))

    code, output = run_in_pty([sys.executable, "-m", "pdrflow", "run", str(config)], tmp_path)
    text = ANSI.sub("", output)
    assert code == 1, text
    assert "\x1b[" in output  # a terminal gets colour and a live display
    # failures are told as they happen, with their reason
    assert re.search(r"failed_model 100_40_-10_(10|20)_00: PDR \(pdrexe\) exited with code 7", text), text[-3000:]
    # the live line: done/total, by state, rate
    assert re.search(r"4/4 .*archived 2.*failed 2", text), text[-3000:]
    assert re.search(r"\d+\.\d\d models/s", text), text[-3000:]
    assert "2 of 4 models not archived" in text

    code, output = run_in_pty([sys.executable, "-m", "pdrflow", "status", str(config)], tmp_path)
    text = ANSI.sub("", output)
    assert code == 1, text
    assert re.search(r"failed_model\s+│\s+2", text), text[-3000:]
    assert re.search(r"archived\s+│\s+2", text), text[-3000:]
    # the two failures share one cause, grouped, each with its parameters and full reason
    assert "2 failed jobs, 1 causes" in text, text[-3000:]
    assert "failed_model x2: PDR (pdrexe) exited with code 7" in text, text[-3000:]
    assert re.search(r"100_40_-10_10_00 \(metallicity=1, density=10000, mass=0.1, fuv=10\): PDR \(pdrexe\) "
                     r"exited with code 7; last output: .*iteration 2391", text), text[-3000:]


def test_status_json_groups_failures(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    (home / "pdrexe").write_text(FAILING_PDR)
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    assert cli("run", str(config)).returncode == 1
    document = status(config)
    assert document["counts"] == {"archived": 2, "failed_model": 2}
    assert [(g["state"], g["count"]) for g in document["failure_groups"]] == [("failed_model", 2)]
    assert sorted(document["failure_groups"][0]["examples"]) == ["100_40_-10_10_00", "100_40_-10_20_00"]
    assert {job["parameters"]["density"] for job in document["failed"]} == {1.0e4}


def test_a_batch_log_gets_event_lines_not_a_live_display(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    (home / "pdrexe").write_text(FAILING_PDR)
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    done = cli("run", str(config))  # stdout is a pipe, as in an sbatch log
    assert done.returncode == 1
    assert "\x1b[" not in done.stdout and "\r" not in done.stdout
    events = done.stdout.split("\ngrid testgrid: 4 models")[0].splitlines()  # before the final summary
    assert sum(line.startswith("failed_model 100_40_") for line in events) == 2, done.stdout


def test_failure_causes_ignore_job_specific_details() -> None:
    a = "storage: [Errno 28] No space left on device: '/arch/g/pdrgrid/pdr100_30_-10_10_00.hdf'"
    b = "storage: [Errno 28] No space left on device: '/arch/g/pdrgrid/pdr100_40_-10_20_00.hdf'"
    assert failure_cause(a, "100_30_-10_10_00") == failure_cause(b, "100_40_-10_20_00")
    assert failure_cause("pdrexe exited with code 7") != failure_cause("pdrexe exited with code 9")
    assert failure_cause("pdrexe exceeded its timeout of 3600.5 s") == failure_cause("pdrexe exceeded its timeout of 12.25 s")
    jobs = [FailedJob(f"m{i}", "failed_storage", f"ledger commit failed after {i}.5 s", {}) for i in range(8)]
    groups = GridStatus("g", {"failed_storage": 8}, {}, jobs).failure_groups()
    assert [(g.count, len(g.examples)) for g in groups] == [(8, 5)]


def test_a_library_traceback_reaches_the_log_file_not_the_terminal(tmp_path: Path) -> None:
    """paramiko's transport thread logs a dead SFTP server's traceback at ERROR; pdrflow reports the failure
    itself (failed_storage, retried), so the terminal shows pdrflow's line and the traceback is in the log."""
    log = tmp_path / "run.log"
    script = (
        "import logging\n"
        "from pathlib import Path\n"
        "from pdrflow.cli.logs import run_logging, setup_logging\n"
        "setup_logging(False)\n"
        f"with run_logging(Path({str(log)!r}), None):\n"
        "    for line in ('Exception (client): Error reading SSH protocol banner', 'Traceback (most recent call "
        "last):', 'EOFError'):\n"
        "        logging.getLogger('paramiko.transport').error(line)\n"
        "    logging.getLogger('pdrflow.driver').warning('archival of job 7 failed; retrying')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    terminal = done.stdout + done.stderr
    assert "archival of job 7 failed; retrying" in terminal
    assert "Traceback" not in terminal and "SSH protocol banner" not in terminal
    logged = log.read_text()
    assert "paramiko.transport: Traceback (most recent call last):" in logged
    assert "EOFError" in logged

