"""`pdrflow export`: a real stand-in grid as an xarray file, a flat table and a pdrtpy model set that pdrtpy 3.x
fits observations with.

The grid (6 densities x 6 FUV fields, half a dex apart, onion species C+, CO) is run once for the module
with the real CLI and exported once; tests that damage the ledger work on copies.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import base_config, cli, write_config

from pdrflow.config import load_config
from pdrflow.export import ExportResult, HolesRefused, export_grid, pdrtpy_modelset
from pdrflow.export.coverage import outliers
from pdrflow.export.cube import empty_cube
from pdrflow.export.lines import DRAINE_ERG_S_CM2, erg_to_k_kms
from pdrflow.results import JobRecord, ResultsError, model_scalars, open_archive, parse_linebt, read_structure

pytestmark = pytest.mark.timeout(240)  # conftest.py runs this module on one xdist worker: one grid

GRID = "exportgrid"
SPECIES = ["C+", "CO"]  # each species is one more onion run per model: the module must stay fast
DENSITIES = [10.0 ** (3 + k / 2) for k in range(6)]
FUVS = [10.0 ** (1 + k / 2) for k in range(6)]
PROBE = (2, 3)  # interior: n = 1e4, χ = 10^2.5
LINES = ["CII_158", "CO_10", "CO_21", "CO_32", "CO_65"]


@dataclass(frozen=True)
class Exported:
    run_dir: Path
    config_path: Path
    out: Path
    result: ExportResult


def grid_config(run_dir: Path) -> dict[str, Any]:
    config = base_config(run_dir, home=None, grid=GRID, kosma_tau={"standin": True, "onion_species": SPECIES})
    config["grid"].update(density=DENSITIES, fuv=FUVS, mass=[10.0])
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    run_dir = tmp_path_factory.mktemp("export-run")
    config_path = write_config(run_dir / "grid.yaml", grid_config(run_dir))
    done = cli("run", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    out = run_dir / "export"
    return Exported(run_dir, config_path, out, export_grid(load_config(config_path), out))


def open_dataset(path: Path) -> Any:
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the files must open without a warning
        return xr.load_dataset(path, engine="h5netcdf")


# ---- the proof: pdrtpy fits an observation with the exported model set ------------------------------


def test_pdrtpy_line_ratio_fit_recovers_the_model(exported: Exported) -> None:
    import astropy.units as u
    from astropy.nddata import StdDevUncertainty
    from pdrtpy.measurement import Measurement
    from pdrtpy.tool.lineratiofit import LineRatioFit

    dataset = open_dataset(exported.result.dataset)
    cell = dataset.isel(density=PROBE[0], fuv=PROBE[1])
    observations = []
    for line in LINES:
        value = float(cell[f"I_{line}"])
        observations.append(Measurement(data=[value], uncertainty=StdDevUncertainty([0.1 * value]), identifier=line,
                                        unit="erg s-1 cm-2 sr-1"))
    modelset = pdrtpy_modelset(exported.out, z=1, mass=10)
    assert {"CII_158/CO_10", "CO_32/CO_10", "CO_65/CO_32"} <= set(modelset.supported_ratios["ratio label"])
    fit = LineRatioFit(modelset, measurements=observations)
    fit.run()
    density = float(np.ravel(fit.density.to(u.cm**-3).data)[0])
    fuv = float(np.ravel(fit.radiation_field.to("Draine").data)[0])
    true_density, true_fuv = float(cell.density), float(cell.fuv)
    print(f"fit: n = {density:.4g} cm-3 (model {true_density:.4g}), FUV = {fuv:.4g} Draine (model {true_fuv:.4g})")
    step = 0.5  # dex, the grid's spacing on both axes
    assert abs(math.log10(density / true_density)) <= step
    assert abs(math.log10(fuv / true_fuv)) <= step


# ---- the dataset and the table -------------------------------------------------------------------------


def test_dataset_round_trips_every_value_the_reader_gives(exported: Exported) -> None:
    dataset = open_dataset(exported.result.dataset)
    assert dataset.sizes == {"density": 6, "fuv": 6}
    assert dataset.density.attrs["units"] == "cm-3" and dataset.fuv.attrs["units"] == "Draine"
    assert float(dataset.mass) == 10.0 and dataset.mass.attrs["units"] == "Msun"
    np.testing.assert_allclose(dataset.fuv_cgs, np.array(FUVS) * DRAINE_ERG_S_CM2)
    assert dataset.attrs["standin"] == 1 and "stand-in" in dataset.attrs["title"]
    assert dataset.attrs["pdr_executable_sha256"] and dataset.attrs["grid"] == GRID
    compared = 0
    with open_archive(load_config(exported.config_path)) as archive:
        for job in archive.jobs():
            cell = dataset.where(dataset.job == job.name, drop=True)
            assert str(cell.state.item()) == "archived"
            for key, (value, info) in model_scalars(archive.model_outputs(job)).items():
                stored = float(cell[key].item())
                assert stored == value or (math.isnan(stored) and math.isnan(value)), (job.name, key)
                assert cell[key].attrs["units"] == info.units
                compared += 1
    assert compared > 36 * 30
    for line in ("CO_10", "CO_32"):  # K km/s from the same intensity
        np.testing.assert_allclose(dataset[f"W_{line}"], erg_to_k_kms(1.0, dataset[f"I_{line}"].attrs["wavelength_um"])
                                   * dataset[f"I_{line}"], rtol=1e-12)
    assert {f"N_{s}" for s in ("CO", "C", "C+", "H2")} <= set(dataset.data_vars)  # from pdrchem


def test_flat_table_holds_the_same_numbers(exported: Exported) -> None:
    import pandas as pd

    dataset = open_dataset(exported.result.dataset)
    for frame in (pd.read_csv(exported.result.csv), pd.read_parquet(exported.result.parquet)):
        assert len(frame) == 36 and set(frame["state"]) == {"archived"}
        row = frame.set_index("job").loc[str(dataset.job.isel(density=PROBE[0], fuv=PROBE[1]).item())]
        cell = dataset.isel(density=PROBE[0], fuv=PROBE[1])
        assert row["I_CII_158"] == pytest.approx(float(cell.I_CII_158), rel=1e-15)
        assert row["density"] == pytest.approx(float(cell.density))


# ---- the model set ---------------------------------------------------------------------------------------


def shipped_kosma_tau(name: str) -> Path:
    import pdrtpy

    return Path(pdrtpy.__file__).parent / "models/kosmatau/Kt2020/non-clumpy/Z=1/M=100" / name


def test_fits_conventions_match_the_kosma_tau_files_pdrtpy_ships(exported: Exported) -> None:
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    ours_dir = exported.out / "pdrtpy" / "Z=1" / "M=10"
    for name, kind in (("CII158.fits", "intensity"), ("CII158_CO10.fits", "ratio")):
        shipped = fits.getheader(shipped_kosma_tau(name))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = fits.getheader(ours_dir / name)
            WCS(ours)
        for key in ("NAXIS", "BITPIX", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "BUNIT", "CLUMPY"):
            assert ours[key] == shipped[key], (name, key, ours[key], shipped[key])
        for key in ("CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "TITLE", "ORIGIN", "DATE", "MASS", "ABUNDZ", "DATAMIN",
                    "DATAMAX"):
            assert key in ours and key in shipped, (name, key)
        assert ours["TITLE"] == shipped["TITLE"], name
        assert ours["MODELTYP"] == kind and ours["ORIGIN"] == "pdrflow"
        # header values from the ledger: the plane's axes, the executables' provenance
        assert ours["MASS"] == 10.0 and ours["Z"] == 1.0 and ours["STANDIN"] is True
        assert ours["CRVAL1"] == pytest.approx(3.0) and ours["CDELT1"] == pytest.approx(0.5)
        assert ours["CRVAL2"] == pytest.approx(1.0 + math.log10(DRAINE_ERG_S_CM2))
        history = "\n".join(ours["HISTORY"])
        assert "pdrflow" in history and "pdr_executable revision standin" in history and "NOT KOSMA-tau" in history
        assert ours["NAXIS1"] == 6 and ours["NAXIS2"] == 6
    shipped_table = Table.read(shipped_kosma_tau("models.tab"), format="ipac")
    ours_table = Table.read(ours_dir / "models.tab", format="ipac")
    assert ours_table.colnames == shipped_table.colnames
    assert {"CII_158", "CII_158/CO_10", "CO_32/CO_10"} <= set(ours_table["ratio"])
    assert "CII158_CO10" in set(shipped_table["filename"]) & set(ours_table["filename"])
    # pixel (density 2, FUV 3) is the probe model's intensity
    data = fits.getdata(ours_dir / "CII158.fits")
    dataset = open_dataset(exported.result.dataset)
    assert data[PROBE[1], PROBE[0]] == float(dataset.I_CII_158.isel(density=PROBE[0], fuv=PROBE[1]))


def test_ratio_without_archived_lines_is_a_note(exported: Exported) -> None:
    assert any(note.startswith("ratio OI_63/CII_158: no archived line OI_63") for note in exported.result.notes)
    assert not (exported.out / "pdrtpy" / "Z=1" / "M=10" / "OI63_CII158.fits").exists()


# ---- coverage ------------------------------------------------------------------------------------------------


def test_failed_model_is_a_hole_refused_unless_allowed(exported: Exported, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(exported.run_dir, copy, ignore=shutil.ignore_patterns("scratch", "export"))
    config_path = write_config(copy / "grid.yaml", grid_config(copy))
    with sqlite3.connect(copy / "ledger.sqlite") as db:
        (victim,) = db.execute("select name from jobs where density = ? and fuv = ?", (1e4, 100.0)).fetchone()
        db.execute("update jobs set state = 'failed_model', reason = 'pdrexe exit 3' where name = ?", (victim,))
    done = cli("export", str(config_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert victim in done.stderr and "failed_model" in done.stderr and "--allow-holes" in done.stderr
    assert not (tmp_path / "out" / "pdrtpy").exists()
    dataset = open_dataset(tmp_path / "out" / "grid.nc")  # written anyway: NaN, with the state
    cell = dataset.where(dataset.job == victim, drop=True)
    assert str(cell.state.item()) == "failed_model" and math.isnan(float(cell.I_CII_158.item()))

    done = cli("export", str(config_path), "--out", str(tmp_path / "holes"), "--allow-holes", "--ratios",
               "CII_158/CO_10")
    assert done.returncode == 0, done.stdout + done.stderr
    from astropy.io import fits

    data = fits.getdata(tmp_path / "holes" / "pdrtpy" / "Z=1" / "M=10" / "CII158_CO10.fits")
    assert math.isnan(data[2, 2]) and np.isfinite(data).sum() == 35
    assert not (tmp_path / "holes" / "pdrtpy" / "Z=1" / "M=10" / "CO32_CO10.fits").exists()  # only the ratio asked


def test_an_outlier_is_flagged_and_kept() -> None:
    jobs = [JobRecord(f"m{i}{j}", "archived", None, 1.0, 10.0 ** (3 + i / 2), 1.0, 10.0 ** (1 + j / 2))
            for i in range(4) for j in range(4)]
    cube = empty_cube("g", jobs)
    smooth = np.array([[10.0 ** (-5 + 0.3 * i + 0.2 * j) for j in range(4)] for i in range(4)])
    smooth[1, 2] *= 300.0  # a spike of 2.5 dex
    cube.values["I_CII_158"] = smooth
    found = outliers(cube, dex=1.0)
    assert [(f["job"], f["quantity"]) for f in found] == [("m12", "I_CII_158")]
    assert found[0]["dex_from_neighbours"] == pytest.approx(math.log10(300.0), abs=0.01)


# ---- the reader's mapping is configuration ----------------------------------------------------------------


def test_structure_datasets_are_mapped_by_config(exported: Exported, tmp_path: Path) -> None:
    config = load_config(exported.config_path)
    source = next((exported.run_dir / "archive" / GRID / "pdrgrid").glob("pdrstruct*.hdf5"))
    other = tmp_path / "other-code.hdf5"
    shutil.copy(source, other)
    with h5py.File(other, "a") as f:
        f.move("tgas", "T_gas")  # a code that names its temperature otherwise
    with pytest.raises(ValueError, match=r"lacks /tgas \(tgas\); the file holds .*/T_gas \(256,\).*results\.structure"):
        read_structure(other, config.results)
    mapped = config.results.model_copy(update={"structure": config.results.structure.model_copy(
        update={"tgas": "T_gas"})})
    profiles, _, _ = read_structure(other, mapped)
    with h5py.File(source, "r") as f:
        order = np.argsort(f["depth_cm"][()], kind="stable")
        assert np.array_equal(profiles["tgas"], f["tgas"][()][order])


def test_linebt_columns_are_mapped_by_config() -> None:
    text = "# onion of another code\n# name lambda_um I_erg Tb_K\nCO_1-0 2600.76 1.5e-9 3.2\n"
    with pytest.raises(ValueError, match=r"no column transition, wavelength_um.*its columns: name lambda_um I_erg"):
        parse_linebt(text, "CO")
    table = parse_linebt(text, "CO", ("name", "lambda_um", "I_erg", "Tb_K"))
    assert table.transitions == ("CO_1-0",) and table.intensity[0] == 1.5e-9 and table.peak_tb[0] == 3.2


def test_no_ledger_is_exit_2(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "grid.yaml", grid_config(tmp_path))
    done = cli("export", str(config_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "no ledger" in done.stderr
    with pytest.raises(ResultsError, match="no ledger"):
        export_grid(load_config(config_path), tmp_path / "out")
    with pytest.raises(ValueError, match="not a line ratio"):
        export_grid(load_config(config_path), tmp_path / "out", ratios=["CII_158"])
    assert HolesRefused.__doc__
