"""The KOSMA-tau stand-in (pdrexe/onionexe): file contract, parameter dependence, determinism, fault knobs.

Scratch directories are laid out as the orchestrator does (pdrflow/tasks/run.py): output dirs, a
pdrinpdata/ of links with chem_rates.dat pointing at the stand-in's rate file, onioninpdata/ and In/
linked from the stand-in home, PDRNEW.INP and pdr_config.json rendered by pdrflow.kosma.inputs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from pdrflow.kosma.inputs import CHEM_RATES_LINK, render_pdr_config_json, render_pdrnew_inp
from pdrflow.kosma.parameters import (
    DEFAULT_NETWORK_SPECIES,
    DEFAULT_ONION_SPECIES,
    ELEMENT_DEFAULTS,
    PARAMETERS,
    clump_radius_cm,
)
from pdrflow.kosma.standin import onion, pdr, standin_home
from pdrflow.kosma.standin.lines import parse_onion_input
from pdrflow.kosma.standin.pdrinput import InputError, fortran_integer, fortran_real

ONION_FILES = ("jerg_{S}.smli", "jerg_{S}.srli", "jtemp_{S}.smli", "jtemp_{S}.smlc", "linebt_{S}.out",
               "ONION3_{S}.OUT")
PDR_FILES = ("pdrstruct_s.hdf5", "pdrchem_c.hdf5", "pdrout.hdf", "chemchk.out", "CTRL_IND")
MASS = 100.0  # M_sun: big enough that the clumps reach the CO layer (A_V,centre > 5)


def make_scratch(root: Path, density: float, fuv: float, **overrides: float) -> Path:
    home = standin_home()
    root.mkdir(parents=True)
    for sub in ("pdroutput", "onionoutput", "Out", "pdrinpdata"):
        (root / sub).mkdir()
    for entry in (home / "pdrinpdata").iterdir():
        (root / "pdrinpdata" / entry.name).symlink_to(entry)
    (root / CHEM_RATES_LINK).symlink_to(home / "pdrinpdata" / "chem_rates_standin.dat")
    for linked in ("onioninpdata", "In"):
        (root / linked).symlink_to(home / linked)
    params = {p.name: p.default for p in PARAMETERS if p.default is not None}
    params.update(xnsur=density, sint=fuv, zmetal=1.0, rtot=clump_radius_cm(density, MASS, 1.5, 0.2))
    params.update(overrides)
    (root / "PDRNEW.INP").write_text(render_pdrnew_inp(params, DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS, "test"))
    (root / "pdr_config.json").write_text(render_pdr_config_json(params, DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS))
    return root


def run(module: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PDRFLOW_STANDIN_")}
    return subprocess.run([sys.executable, "-m", f"pdrflow.kosma.standin.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={**clean, **env}, check=False)


def stage_onion(scratch: Path, species: str) -> None:
    """What the orchestrator does before each onion run."""
    (scratch / "ONION3.INP").write_bytes((scratch / "onioninpdata" / f"ONION3.INP.{species}").read_bytes())
    if (scratch / "pdroutput" / "CTRL_IND").exists():
        (scratch / "CTRL_IND").write_bytes((scratch / "pdroutput" / "CTRL_IND").read_bytes())


def run_onion(scratch: Path, species: str, **env: str) -> subprocess.CompletedProcess[str]:
    stage_onion(scratch, species)
    return run("onion", scratch, str((scratch / "pdroutput" / "pdrstruct_s.hdf5").absolute()), **env)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def linebt(path: Path) -> dict[str, tuple[float, float, float]]:
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert header[-1].split() == ["#", "transition", "wavelength_um", "intensity_erg_s_cm2_sr", "peak_tb_K"]
    rows = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(row) == 4 for row in rows)
    return {row[0]: (float(row[1]), float(row[2]), float(row[3])) for row in rows}


def transition_av(scratch: Path, species: str, total: str) -> float:
    """A_V where ``species`` first holds half of ``total`` (e.g. CO of all carbon)."""
    with h5py.File(scratch / "pdroutput" / "pdrstruct_s.hdf5", "r") as f:
        av = f["av"][()]
        fraction = f[f"abundances/{species}"][()] / total_of(f, total)
    assert fraction[-1] > 0.5, "the clump must reach the transition"
    return float(av[np.argmax(fraction > 0.5)])


def total_of(f: h5py.File, element: str) -> np.ndarray:
    if element == "H":
        return f["abundances/H"][()] + 2 * f["abundances/H2"][()]
    return sum(f[f"abundances/{s}"][()] for s in ("C+", "C", "CO"))


@dataclass
class Model:
    scratch: Path
    pdr: subprocess.CompletedProcess[str]
    sha_before_onion: str
    chem_sha: str


MODELS = {"A": (1e3, 10.0), "B": (1e3, 1e4), "C": (1e5, 10.0)}  # B: more FUV than A; C: denser than A


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    root = tmp_path_factory.mktemp("standin")
    result = {}
    for name, (density, fuv) in MODELS.items():
        scratch = make_scratch(root / name, density, fuv)
        done = run("pdr", scratch)
        assert done.returncode == 0, done.stdout + done.stderr
        before = sha(scratch / "pdroutput" / "pdrstruct_s.hdf5")
        for species in ("C+", "CO"):
            onion_run = run_onion(scratch, species)
            assert onion_run.returncode == 0, onion_run.stdout + onion_run.stderr
        result[name] = Model(scratch, done, before, sha(scratch / "pdroutput" / "pdrchem_c.hdf5"))
    return result


@pytest.fixture
def call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple]]:
    """Run a stand-in main() in this process (fast error paths): (exit code, stdout, stderr)."""

    def invoke(main: Callable[[], int], cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("PDRFLOW_STANDIN_")]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            patch.setattr(sys, "argv", ["prog", *args])
            patch.chdir(cwd)
            code = main()
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke


def test_version_lines(tmp_path: Path) -> None:
    for module in ("pdr", "onion"):
        done = run(module, tmp_path, "--version")
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        assert len([line for line in lines if "Revision: standin-" in line]) == 1
        assert any(line.startswith("compiled the ") and " at " in line for line in lines)
        assert "not KOSMA-tau" in done.stdout and "NOT KOSMA-tau" in done.stdout
    assert list(tmp_path.iterdir()) == []  # --version writes nothing


def test_pdr_writes_every_contract_file_as_real_hdf5(models: dict[str, Model]) -> None:
    scratch = models["A"].scratch
    for name in PDR_FILES:
        assert (scratch / "pdroutput" / name).stat().st_size > 0, name
    assert (scratch / "Out" / "mrt_summary.dat").is_file() and (scratch / "Out" / "fuv_field.dat").is_file()
    stdout = models["A"].pdr.stdout
    assert stdout.splitlines()[0].startswith("pdrflow stand-in") and "NOT KOSMA-tau" in stdout.splitlines()[0]
    assert stdout.rstrip().endswith("PDR model finished")
    assert b"stand-in" in (scratch / "pdroutput" / "pdrout.hdf").read_bytes()[:200]
    with h5py.File(scratch / "pdroutput" / "pdrstruct_s.hdf5", "r") as f:
        assert "NOT KOSMA-tau" in f.attrs["standin"]
        assert f.attrs["xnsur"] == 1e3 and f.attrs["sint"] == 10.0 and f.attrs["zmetal"] == 1.0
        assert f.attrs["rtot"] == clump_radius_cm(1e3, MASS, 1.5, 0.2)
        assert (f.attrs["alpha"], f.attrs["rcore"], f.attrs["cosray"]) == (1.5, 0.2, 2.0e-16)
        depth, av = f["depth_cm"][()], f["av"][()]
        assert depth[0] == 0.0 and depth[-1] == pytest.approx(f.attrs["rtot"]) and np.all(np.diff(depth) > 0)
        assert np.all(np.diff(av) > 0) and av[-1] > 5
        assert np.all(np.diff(f["tgas"][()]) <= 0) and np.all(np.diff(f["tdust"][()]) <= 0)
        for species in ("H", "H2", "C+", "C", "CO", "e-", "O", "13C+", "13C", "13CO", *DEFAULT_ONION_SPECIES):
            assert f[f"abundances/{species}"].shape == depth.shape
        carbon = total_of(f, "C")
        assert carbon == pytest.approx(ELEMENT_DEFAULTS["C"])  # carbon is conserved
        ratio = f["abundances/13CO"][()][-1] / f["abundances/CO"][()][-1]
        assert ratio == pytest.approx(ELEMENT_DEFAULTS["13C"] / ELEMENT_DEFAULTS["C"])
        assert total_of(f, "H") == pytest.approx(1.0)
    with h5py.File(scratch / "pdroutput" / "pdrchem_c.hdf5", "r") as f:
        names = [n.decode() for n in f["species"][()]]
        assert {"H2", "CO", "C+"} <= set(names)
        assert f["abundance"].shape == (len(names), len(depth))
        assert np.all(f["column_density"][()] >= 0) and f["column_density"][names.index("CO")] > 0
    ctrl = (scratch / "pdroutput" / "CTRL_IND").read_text()
    assert f"NPOINTS {len(depth)}" in ctrl


def test_profiles_depend_on_fuv_and_density_in_the_expected_direction(models: dict[str, Model]) -> None:
    def surface(name: str, key: str) -> float:
        with h5py.File(models[name].scratch / "pdroutput" / "pdrstruct_s.hdf5", "r") as f:
            return float(f[key][0])

    assert surface("B", "tgas") > surface("A", "tgas")  # more FUV: hotter surface
    assert surface("C", "tgas") < surface("A", "tgas")  # denser: cooler surface
    assert surface("B", "tdust") > surface("A", "tdust")
    a, b, c = (models[n].scratch for n in "ABC")
    assert transition_av(b, "CO", "C") > transition_av(a, "CO", "C") + 0.5  # CO deeper with more FUV
    assert transition_av(c, "CO", "C") < transition_av(a, "CO", "C")  # and shallower when denser
    assert 1.0 <= transition_av(a, "CO", "C") <= 4.5 and transition_av(b, "CO", "C") <= 4.5
    assert _h2_av(b) > _h2_av(a)  # H/H2 transition deeper with more FUV
    # Lines: [CII] brighter with more FUV; CO 1-0 follows the CO column (denser clump: more CO).
    cii = {n: linebt(models[n].scratch / "onionoutput" / "linebt_C+.out")["CII_158um"][1] for n in "ABC"}
    assert cii["B"] > 3 * cii["A"]
    columns = {}
    for n in "AC":
        with h5py.File(models[n].scratch / "pdroutput" / "pdrchem_c.hdf5", "r") as f:
            columns[n] = float(f["column_density"][[s.decode() for s in f["species"][()]].index("CO")])
    co10 = {n: linebt(models[n].scratch / "onionoutput" / "linebt_CO.out")["CO_1-0"][1] for n in "AC"}
    assert columns["C"] > columns["A"] and co10["C"] > co10["A"]
    assert models["A"].chem_sha != models["B"].chem_sha != models["C"].chem_sha


def _h2_av(scratch: Path) -> float:
    with h5py.File(scratch / "pdroutput" / "pdrstruct_s.hdf5", "r") as f:
        av, h2 = f["av"][()], 2 * f["abundances/H2"][()]
    return float(av[np.argmax(h2 > 0.5)])


def test_onion_writes_six_files_and_modifies_the_structure_file(models: dict[str, Model]) -> None:
    model = models["A"]
    for species in ("C+", "CO"):
        for pattern in ONION_FILES:
            assert (model.scratch / "onionoutput" / pattern.format(S=species)).stat().st_size > 0
    co = linebt(model.scratch / "onionoutput" / "linebt_CO.out")
    assert list(co) == [f"CO_{j + 1}-{j}" for j in range(7)]
    assert all(intensity > 0 and tb > 0 for _, intensity, tb in co.values())
    structure = model.scratch / "pdroutput" / "pdrstruct_s.hdf5"
    assert sha(structure) != model.sha_before_onion
    with h5py.File(structure, "r") as f:
        assert set(f["onion"]) == {"C+", "CO"}
        stored = f["onion/CO/intensity_erg_s_cm2_sr"][()]
        assert [t.decode() for t in f["onion/CO/transitions"][()]] == list(co)
    assert stored == pytest.approx([value[1] for value in co.values()], rel=1e-5)


def test_every_shipped_onion_input_runs(models: dict[str, Model], call: Callable[..., tuple]) -> None:
    scratch = models["C"].scratch
    structure = str((scratch / "pdroutput" / "pdrstruct_s.hdf5").absolute())
    for species in DEFAULT_ONION_SPECIES:
        name, transitions = parse_onion_input((standin_home() / "onioninpdata" / f"ONION3.INP.{species}").read_text())
        assert name == species and transitions
        stage_onion(scratch, species)
        code, out, _ = call(onion.main, scratch, structure)
        assert code == 0, out
        assert all((scratch / "onionoutput" / p.format(S=species)).is_file() for p in ONION_FILES)
    with h5py.File(structure, "r") as f:
        assert set(f["onion"]) == set(DEFAULT_ONION_SPECIES)
    rates = standin_home() / "pdrinpdata" / "chem_rates_standin.dat"
    assert rates.is_file() and not rates.is_symlink() and "stand-in" in rates.read_text()
    assert (standin_home() / "In" / "README").is_file() and (standin_home() / "templates" / "README").is_file()


def test_identical_inputs_give_identical_bytes(models: dict[str, Model], tmp_path: Path) -> None:
    # Seconds after the fixture ran: any embedded time would show up as a different digest.
    scratch = make_scratch(tmp_path / "again", *MODELS["A"])
    assert run("pdr", scratch).returncode == 0
    original = models["A"].scratch
    assert sha(scratch / "pdroutput" / "pdrstruct_s.hdf5") == models["A"].sha_before_onion
    for name in ("pdrchem_c.hdf5", "pdrout.hdf", "chemchk.out", "CTRL_IND"):
        assert sha(scratch / "pdroutput" / name) == sha(original / "pdroutput" / name), name
    for species in ("C+", "CO"):
        assert run_onion(scratch, species).returncode == 0
        for pattern in ONION_FILES:
            name = pattern.format(S=species)
            assert sha(scratch / "onionoutput" / name) == sha(original / "onionoutput" / name), name
    # onion's modification of the structure file is deterministic too
    assert sha(scratch / "pdroutput" / "pdrstruct_s.hdf5") == sha(original / "pdroutput" / "pdrstruct_s.hdf5")


def test_pdr_failure_knob_sleeps_then_exits_with_the_code_and_writes_nothing(tmp_path: Path) -> None:
    scratch = make_scratch(tmp_path / "fail", 1e3, 10.0)
    started = time.monotonic()
    done = run("pdr", scratch, PDRFLOW_STANDIN_FAIL="pdr", PDRFLOW_STANDIN_EXIT="17", PDRFLOW_STANDIN_SECONDS="0.4")
    assert time.monotonic() - started >= 0.4
    assert done.returncode == 17
    assert "injected" in done.stdout and "ERROR" in done.stderr
    assert list((scratch / "pdroutput").iterdir()) == []  # no CTRL_IND, no pdrstruct_s.hdf5
    missing_ctrl = run_onion(scratch, "CO")  # like the real code, onion refuses without CTRL_IND
    assert missing_ctrl.returncode != 0 and "CTRL_IND" in missing_ctrl.stderr


def test_onion_failure_knobs_and_output_padding(tmp_path: Path, call: Callable[..., tuple]) -> None:
    scratch = make_scratch(tmp_path / "padded", 1e3, 10.0)
    assert run("pdr", scratch, PDRFLOW_STANDIN_OUTPUT_MB="2").returncode == 0
    structure = scratch / "pdroutput" / "pdrstruct_s.hdf5"
    assert structure.stat().st_size == pytest.approx(2 * 2**20, rel=0.1)
    before = sha(structure)
    failed = run_onion(scratch, "C", PDRFLOW_STANDIN_FAIL="onion:C", PDRFLOW_STANDIN_EXIT="5")
    assert failed.returncode == 5 and "onion for C failed" in failed.stdout
    assert sha(structure) == before and not (scratch / "onionoutput" / "linebt_C.out").exists()
    stage_onion(scratch, "C+")  # onion:C names C only, not C+
    assert call(onion.main, scratch, str(structure), PDRFLOW_STANDIN_FAIL="onion:C")[0] == 0
    stage_onion(scratch, "O")
    assert call(onion.main, scratch, str(structure), PDRFLOW_STANDIN_FAIL="onion")[0] == 1
    assert call(onion.main, scratch, str(structure), PDRFLOW_STANDIN_FAIL="pdr")[0] == 0
    assert call(onion.main, scratch, str(scratch / "missing.hdf5"))[0] == 2
    assert call(onion.main, scratch)[0] == 2  # no structure file argument
    (scratch / "CTRL_IND").unlink()
    code, _, err = call(onion.main, scratch, str(structure))
    assert code == 2 and "CTRL_IND" in err


def test_bad_knob_values_are_refused(tmp_path: Path, call: Callable[..., tuple]) -> None:
    scratch = make_scratch(tmp_path / "knobs", 1e3, 10.0)
    for knob, value in (("PDRFLOW_STANDIN_SECONDS", "soon"), ("PDRFLOW_STANDIN_OUTPUT_MB", "big"),
                        ("PDRFLOW_STANDIN_EXIT", "x"), ("PDRFLOW_STANDIN_EXIT", "0"),
                        ("PDRFLOW_STANDIN_FAIL", "everything"), ("PDRFLOW_STANDIN_SECONDS", "-1")):
        code, _, err = call(pdr.main, scratch, **{knob: value})
        assert code == 2 and knob in err, (knob, value)
    assert list((scratch / "pdroutput").iterdir()) == []


def set_line(path: Path, number: int, value: str) -> str:
    """Replace line ``number`` (1-based) of a file; returns the old line. KOSMA-tau reads PDRNEW.INP by position."""
    lines = path.read_text().splitlines()
    old, lines[number - 1] = lines[number - 1], value
    path.write_text("\n".join(lines) + "\n")
    return old


def test_inconsistent_inputs_exit_3(tmp_path: Path, call: Callable[..., tuple]) -> None:
    scratch = make_scratch(tmp_path / "x", 1e3, 10.0)
    inp = scratch / "PDRNEW.INP"
    original = inp.read_text()
    assert fortran_real(set_line(inp, 7, "2.0e+03")) == 1e3  # line 7: XNSUR
    done = run("pdr", scratch)
    assert done.returncode == 3 and "XNSUR" in done.stderr and "surface_density" in done.stderr
    assert not (scratch / "pdroutput" / "CTRL_IND").exists()
    for number, card, value in ((17, "SINT", "11.0"), (23, "ZMETAL", "0.5"), (136, "NITER", "61")):
        inp.write_text(original)
        set_line(inp, number, value)
        code, _, err = call(pdr.main, scratch)
        assert code == 3 and card in err and f"line {number}" in err


def test_fortran_exponents_and_missing_inputs(tmp_path: Path, call: Callable[..., tuple]) -> None:
    assert fortran_real("1.0d+03") == fortran_real("1.0D3") == fortran_real("1000") == 1000.0
    for bad in ("abc", "1.0e+03, 2.0"):
        with pytest.raises(InputError):
            fortran_real(bad)
    with pytest.raises(InputError):
        fortran_integer("1.0")
    scratch = make_scratch(tmp_path / "d", 1e3, 10.0)
    inp = scratch / "PDRNEW.INP"
    density = set_line(inp, 7, "1.0d+03")
    assert fortran_real(density) == 1e3
    assert call(pdr.main, scratch)[0] == 0  # the Fortran exponent is the same number
    set_line(inp, 29, "1.0")  # IFUVMETH is an INTEGER READ: a real there is a read error, as in Fortran
    code, _, err = call(pdr.main, scratch)
    assert code == 2 and "line 29" in err and "IFUVMETH" in err
    set_line(inp, 29, "1")
    (scratch / CHEM_RATES_LINK).unlink()
    code, _, err = call(pdr.main, scratch)
    assert code == 2 and "chem_rates.dat" in err
    (scratch / CHEM_RATES_LINK).symlink_to(tmp_path / "nowhere.dat")  # dangling link
    assert call(pdr.main, scratch)[0] == 2
    (scratch / "pdr_config.json").write_text("{ // comments are not JSON\n}")
    code, _, err = call(pdr.main, scratch)
    assert code == 2 and "pdr_config.json" in err
    (scratch / "pdr_config.json").unlink()
    assert call(pdr.main, scratch)[0] == 2
    inp.write_text("nothing useful\n")
    code, _, err = call(pdr.main, scratch)
    assert code == 2 and "PDRNEW.INP" in err
    assert call(pdr.main, scratch, "extra")[0] == 2


def test_no_mcdrt_output_without_ifuvmeth(tmp_path: Path, call: Callable[..., tuple]) -> None:
    scratch = make_scratch(tmp_path / "nomrt", 1e3, 10.0, ifuvmeth=0)
    assert call(pdr.main, scratch)[0] == 0
    assert list((scratch / "Out").iterdir()) == []
    assert "IFUVMETH 0" in (scratch / "pdroutput" / "CTRL_IND").read_text()
