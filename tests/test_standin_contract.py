"""The stand-in honours the KOSMA-tau file contract (and says it is not KOSMA-tau)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from pdrflow.kosma.inputs import CHEM_RATES_LINK, render_pdr_config_json, render_pdrnew_inp
from pdrflow.kosma.parameters import (
    DEFAULT_NETWORK_SPECIES,
    ELEMENT_DEFAULTS,
    PARAMETERS,
    clump_radius_cm,
)
from pdrflow.kosma.standin import standin_home


def _scratch(root: Path, density: float, fuv: float) -> Path:
    home = standin_home()
    root.mkdir(parents=True)
    for sub in ("pdroutput", "onionoutput", "Out", "pdrinpdata"):
        (root / sub).mkdir()
    (root / CHEM_RATES_LINK).symlink_to(home / "pdrinpdata" / "chem_rates_standin.dat")
    (root / "onioninpdata").symlink_to(home / "onioninpdata")
    params = {p.name: p.default for p in PARAMETERS if p.default is not None}
    params.update(xnsur=density, sint=fuv, zmetal=1.0, rtot=clump_radius_cm(density, 0.1, 1.5, 0.2))
    (root / "PDRNEW.INP").write_text(render_pdrnew_inp(params, DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS))
    (root / "pdr_config.json").write_text(render_pdr_config_json(params, DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS))
    return root


def _run(module: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"pdrflow.kosma.standin.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env}, check=False)


def _onion(scratch: Path, species: str, **env: str) -> subprocess.CompletedProcess[str]:
    (scratch / "ONION3.INP").write_bytes((scratch / "onioninpdata" / f"ONION3.INP.{species}").read_bytes())
    if (scratch / "pdroutput" / "CTRL_IND").exists():
        (scratch / "CTRL_IND").write_bytes((scratch / "pdroutput" / "CTRL_IND").read_bytes())
    return _run("onion", scratch, str(scratch / "pdroutput" / "pdrstruct_s.hdf5"), **env)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_names_a_revision_and_says_it_is_not_kosma_tau(tmp_path: Path) -> None:
    done = _run("pdr", tmp_path, "--version")
    assert done.returncode == 0
    assert "NOT KOSMA-tau" in done.stdout
    assert "Revision: standin-" in done.stdout and "compiled the " in done.stdout


def test_outputs_follow_the_contract_and_depend_on_the_parameters(tmp_path: Path) -> None:
    surfaces = {}
    for density, fuv in ((1e3, 10.0), (1e3, 1e4), (1e5, 10.0)):
        scratch = _scratch(tmp_path / f"{density:g}-{fuv:g}", density, fuv)
        assert _run("pdr", scratch).returncode == 0
        for name in ("pdrstruct_s.hdf5", "pdrchem_c.hdf5", "pdrout.hdf", "chemchk.out", "CTRL_IND"):
            assert (scratch / "pdroutput" / name).is_file()
        assert (scratch / "Out" / "mrt_summary.dat").is_file()  # IFUVMETH=1: MCDRT output
        before = _sha(scratch / "pdroutput" / "pdrstruct_s.hdf5")
        for species in ("CO", "C+"):
            assert _onion(scratch, species).returncode == 0
            for name in ("jerg_{S}.smli", "jerg_{S}.srli", "jtemp_{S}.smli", "jtemp_{S}.smlc", "linebt_{S}.out",
                         "ONION3_{S}.OUT"):
                assert (scratch / "onionoutput" / name.format(S=species)).is_file()
        assert _sha(scratch / "pdroutput" / "pdrstruct_s.hdf5") != before  # onion modified it
        with h5py.File(scratch / "pdroutput" / "pdrstruct_s.hdf5", "r") as f:
            co = f["abundances/CO"][()]
            av = f["av"][()]
            surfaces[(density, fuv)] = (f["tgas"][0], av[co.argmax() // 2 if co.max() > 0 else 0],
                                        f["onion/C+/intensity_erg_s_cm2_sr"][0])
    assert surfaces[(1e3, 1e4)][0] > surfaces[(1e3, 10.0)][0]  # more FUV: hotter surface
    assert surfaces[(1e5, 10.0)][0] < surfaces[(1e3, 10.0)][0]  # denser: cooler surface


def test_identical_inputs_give_identical_bytes(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        scratch = _scratch(tmp_path / run, 1e4, 100.0)
        assert _run("pdr", scratch).returncode == 0
        assert _onion(scratch, "CO").returncode == 0
        digests.append([_sha(scratch / "pdroutput" / n) for n in ("pdrstruct_s.hdf5", "pdrchem_c.hdf5")])
    assert digests[0] == digests[1]


def test_fault_knobs(tmp_path: Path) -> None:
    scratch = _scratch(tmp_path / "fail", 1e3, 10.0)
    done = _run("pdr", scratch, PDRFLOW_STANDIN_FAIL="pdr", PDRFLOW_STANDIN_EXIT="17")
    assert done.returncode == 17 and "injected" in done.stdout
    assert not (scratch / "pdroutput" / "CTRL_IND").exists()
    assert _onion(scratch, "CO").returncode != 0  # no CTRL_IND: onion refuses, like the real code
    assert _run("pdr", scratch, PDRFLOW_STANDIN_SECONDS="soon").returncode == 2
    padded = _scratch(tmp_path / "padded", 1e3, 10.0)
    assert _run("pdr", padded, PDRFLOW_STANDIN_OUTPUT_MB="3").returncode == 0
    assert (padded / "pdroutput" / "pdrstruct_s.hdf5").stat().st_size == pytest.approx(3 * 2**20, rel=0.1)
    assert _onion(padded, "C+", PDRFLOW_STANDIN_FAIL="onion:C").returncode == 0
    assert _onion(padded, "C", PDRFLOW_STANDIN_FAIL="onion:C").returncode == 1


def test_inconsistent_inputs_are_refused(tmp_path: Path) -> None:
    scratch = _scratch(tmp_path / "x", 1e3, 10.0)
    lines = (scratch / "PDRNEW.INP").read_text().splitlines()
    lines[6] = "2.0e+03"  # line 7, read by position: XNSUR (pdr_config.json still says 1e3)
    (scratch / "PDRNEW.INP").write_text("\n".join(lines) + "\n")
    done = _run("pdr", scratch)
    assert done.returncode == 3 and "XNSUR" in done.stdout
    lines[6], lines[7] = lines[7], lines[6]  # value and description swapped: the REAL read of line 7 fails
    (scratch / "PDRNEW.INP").write_text("\n".join(lines) + "\n")
    done = _run("pdr", scratch)
    assert done.returncode == 2 and "line 7" in done.stdout and "XNSUR" in done.stdout
