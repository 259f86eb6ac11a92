"""The README's quickstart: examples/quickstart.yaml with the stand-in KOSMA-tau, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import yaml
from helpers import cli, files_under, ledger_rows, status, verify

REPO = Path(__file__).resolve().parent.parent
SPECIES = ["CO", "C+", "C", "O"]
FILES_PER_MODEL = 9 + 7 * len(SPECIES)


def _quickstart(tmp_path: Path, *, small: bool = False) -> Path:
    """The shipped quickstart config in tmp_path (its relative paths then point there too)."""
    config = tmp_path / "quickstart.yaml"
    shutil.copy(REPO / "examples" / "quickstart.yaml", config)
    if small:  # 2 models: the failure tests need the stand-in, not the whole grid
        document = yaml.safe_load(config.read_text())
        document["grid"].update(density=[1.0e3], fuv=[1.0e1, 1.0e3])
        config.write_text(yaml.safe_dump(document))
    return config


def test_quickstart_grid_end_to_end(tmp_path: Path) -> None:
    config = _quickstart(tmp_path)
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "archived" in done.stdout and "9" in done.stdout  # the summary table
    run_dir = tmp_path / "quickstart-run"
    archive = run_dir / "archive" / "quickstart"
    assert len(files_under(run_dir / "archive")) == 9 * FILES_PER_MODEL
    names = [f"100_{d}_-10_{c}_00" for d in (30, 40, 50) for c in (10, 20, 30)]
    for name in names:
        for required in (f"pdrstruct{name}.hdf5", f"pdrchem{name}.hdf5", f"TEXTOUT{name}", f"PDRNEW{name}.INP",
                         f"pdr_config{name}.json", f"CTRL_IND{name}", f"chemchk{name}.out", f"pdr{name}.hdf"):
            assert (archive / "pdrgrid" / required).is_file(), required
        for species in SPECIES:
            assert (archive / "oniongrid" / f"ONION{name}.linebt_{species}.out").is_file()
            assert (archive / "oniongrid" / f"TEXTOUT{name}_{species}").is_file()
    # Real HDF5 whose contents depend on the model, and that onion modified after the PDR run.
    profiles = {}
    for name in (names[0], names[-1]):
        with h5py.File(archive / "pdrgrid" / f"pdrstruct{name}.hdf5", "r") as structure:
            datasets: list[str] = []
            structure.visit(datasets.append)
            assert any(path.startswith("onion") for path in datasets), datasets
            profiles[name] = {path: structure[path][()].tobytes() for path in datasets
                              if isinstance(structure[path], h5py.Dataset)}
    assert profiles[names[0]] != profiles[names[-1]]

    db = run_dir / "ledger.sqlite"
    assert ledger_rows(db, "select state, count(*) from jobs group by state") == [("archived", 9)]
    assert ledger_rows(db, "select count(*) from archived_files") == [(9 * FILES_PER_MODEL,)]
    assert verify(config)["returncode"] == 0

    again = cli("run", str(config))
    assert again.returncode == 0
    assert status(config)["attempts"] == {"model": 9, "archive": 9}


def test_standin_pdr_failure_is_failed_model_and_keeps_textout(tmp_path: Path) -> None:
    config = _quickstart(tmp_path, small=True)
    done = cli("run", str(config), env={"PDRFLOW_STANDIN_FAIL": "pdr", "PDRFLOW_STANDIN_EXIT": "42"})
    assert done.returncode == 1
    report = status(config)
    assert report["counts"] == {"failed_model": 2}
    assert report["attempts"] == {"model": 2, "archive": 0}
    assert all("exited with code 42" in job["reason"] for job in report["failed"])
    for scratch in (tmp_path / "quickstart-run" / "scratch").iterdir():
        assert (scratch / "pdroutput" / "TEXTOUT").stat().st_size > 0
        assert not any((scratch / "onionoutput").iterdir())  # onion never ran
    assert files_under(tmp_path / "quickstart-run" / "archive") == []


def test_standin_onion_failure_for_one_species_stops_the_chain(tmp_path: Path) -> None:
    config = _quickstart(tmp_path, small=True)
    done = cli("run", str(config), env={"PDRFLOW_STANDIN_FAIL": "onion:C"})
    assert done.returncode == 1
    report = status(config)
    assert report["counts"] == {"failed_model": 2}
    assert all("onion for C exited" in job["reason"] for job in report["failed"])
    for scratch in (tmp_path / "quickstart-run" / "scratch").iterdir():
        outputs = {p.name for p in (scratch / "onionoutput").iterdir()}
        assert "linebt_CO.out" in outputs and "linebt_C+.out" in outputs  # species before C ran
        assert "linebt_O.out" not in outputs  # the chain stopped at C
        assert "TEXTOUT_C" in outputs


def _quickstart_tree(tmp_path: Path, run_exit: int) -> Path:
    """The real scripts/quickstart in a copy of the tree whose setup and pdrflow are stand-ins: installing
    for real needs the network (pip's build isolation), and the grid itself is tested above."""
    tree = tmp_path / "repo with space"
    (tree / "scripts").mkdir(parents=True)
    (tree / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "quickstart", tree / "scripts" / "quickstart")
    for path, text in ((tree / "scripts" / "setup", "#!/bin/sh\nexit 0\n"),
                       (tree / ".venv" / "bin" / "pdrflow", f"#!/bin/sh\necho \"ran pdrflow $*\"\nexit {run_exit}\n")):
        path.write_text(text)
        path.chmod(0o755)
    return tree


def test_quickstart_prints_how_to_put_pdrflow_on_path(tmp_path: Path) -> None:
    import os
    import subprocess

    tree = _quickstart_tree(tmp_path, run_exit=1)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([str(tree / "scripts" / "quickstart")], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # the run's exit code, not the hint's
    assert "ran pdrflow run examples/quickstart.yaml" in done.stdout
    export = next(line.strip() for line in done.stdout.splitlines() if line.strip().startswith("export PATH="))
    source = next(line.strip() for line in done.stdout.splitlines() if line.strip().startswith("source "))
    assert str(tree / ".venv" / "bin") in source.replace("\\ ", " ")
    # The printed line, pasted into a shell, makes `pdrflow` this tree's
    found = subprocess.run(["bash", "-c", f"{export}; command -v pdrflow"], capture_output=True, text=True,
                           env=env, timeout=30, check=False)
    assert found.stdout.strip() == str(tree / ".venv" / "bin" / "pdrflow"), found.stderr
    # Already on PATH: no hint.
    on_path = {**env, "PATH": f"{tree / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"}
    quiet = subprocess.run([str(tree / "scripts" / "quickstart")], capture_output=True, text=True, env=on_path,
                           timeout=60, check=False)
    assert quiet.returncode == 1 and "export PATH" not in quiet.stdout


def test_readme_and_user_guide_invoke_pdrflow_the_same_way() -> None:
    for doc in (REPO / "README.md", REPO / "docs" / "user-guide.md"):
        text = doc.read_text()
        assert ".venv/bin/pdrflow " not in text, f"{doc.name}: write `pdrflow ...` (the quickstart prints the PATH line)"
        assert "source .venv/bin/activate" in text, doc.name
