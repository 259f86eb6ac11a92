"""examples/quickstart.ipynb executed in a real Jupyter kernel; a kernel stopped mid-run leaves nothing running."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import h5py
import nbformat
import psutil
from helpers import base_config, cli, ledger_rows, verify, write_config, write_null_home
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"])
    return "".join(parts)


def _execute(notebook: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    return client.execute()  # starts a kernel, runs every cell, shuts the kernel down


def test_quickstart_notebook_runs_and_shows_the_grid(tmp_path: Path) -> None:
    for name in ("quickstart.ipynb", "quickstart.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    notebook = _execute(nbformat.read(tmp_path / "quickstart.ipynb", as_version=4), tmp_path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []

    # the progress widget was displayed
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in code for o in c.outputs)
    waited = next(_text(c) for c in code if "as_completed" in c.source)
    assert waited.count("archived") == 9 and "model runs this time: 9" in waited
    status = next(_text(c) for c in code if "value_counts" in c.source)
    assert "states: {'archived': 9}" in status

    # the profile cell printed what the archive holds, and drew a figure
    cell = next(c for c in code if "grid.outputs" in c.source)
    printed = float(re.search(r"surface Tgas of 100_40_-10_20_00: ([0-9.e+-]+) K", _text(cell)).group(1))
    with h5py.File(tmp_path / "quickstart-run/archive/quickstart/pdrgrid/pdrstruct100_40_-10_20_00.hdf5") as f:
        assert abs(printed - float(f["tgas"][0])) <= 1e-5 * abs(printed)
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)

    report = next(_text(c) for c in code if "write_report" in c.source)
    assert (tmp_path / "quickstart-run/report").is_dir() and "report:" in report
    assert [p for p in (tmp_path / "quickstart-run/scratch").rglob("*") if p.is_file()] == []


SLOW_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
[ -f {marker} ] && sleep 60
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do echo "$f" > "pdroutput/$f"; done
echo mcdrt > Out/mrt.dat
"""


def test_stopping_the_kernel_mid_run_stops_the_cluster(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    marker = tmp_path / "slow"
    marker.touch()
    (home / "pdrexe").write_text(SLOW_PDR.format(marker=marker))
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    source = f"""
import os, time
import pdrflow
run = pdrflow.Grid.open({str(config)!r}).submit()
deadline = time.monotonic() + 120
while time.monotonic() < deadline and not (run.client and len(run.client.run(os.getpid)) == 2):
    time.sleep(0.2)
time.sleep(2)  # the models are running now
print("workers", *sorted(run.client.run(os.getpid).values()))
"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    started = time.monotonic()
    notebook = _execute(notebook, tmp_path)  # the kernel is shut down with the grid still running
    workers = [int(pid) for pid in _text(notebook.cells[0]).split()[1:]]
    assert len(workers) == 2, _text(notebook.cells[0])
    assert time.monotonic() - started < 60  # it did not wait for the 60 s models
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in workers):
        time.sleep(0.2)
    assert [pid for pid in workers if psutil.pid_exists(pid)] == []
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-2:] == ["sleep", "60"]] == []
    # Jupyter gives a kernel ~2.5 s between the shutdown request and SIGTERM: the run is stopped and
    # settled in that time when the machine is quick, else it is a crashed driver, which the next run
    # recovers. Either way the same command finishes the grid, with nothing lost or doubled.
    marker.unlink()
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ledger_rows(tmp_path / "ledger.sqlite", "SELECT state, count(*) FROM jobs GROUP BY state") == [("archived", 4)]
    assert ledger_rows(tmp_path / "ledger.sqlite", "SELECT count(*) FROM attempts WHERE outcome = 'running'") == [(0,)]
    assert verify(config)["returncode"] == 0
