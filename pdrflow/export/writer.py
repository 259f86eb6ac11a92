"""Write a grid's export: ``grid.nc`` (xarray, h5netcdf), ``grid.csv`` and ``grid.parquet`` (one row per job),
``coverage.json`` and the pdrtpy model set under ``pdrtpy/`` (refused for planes with holes unless allowed)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..results import open_archive
from .coverage import Coverage, IrregularAxis, coverage, planes
from .cube import GridCube, collect_cube, provenance_summary
from .fits import ModelSetFiles, images, plane_holes, write_model_set
from .lines import DRAINE_ERG_S_CM2, parse_ratio

STANDIN_MARK = "stand-in, not KOSMA-tau"
AXIS_ATTRS: dict[str, dict[str, str]] = {
    "metallicity": {"units": "1", "long_name": "metallicity relative to solar (Z/Z_sun)"},
    "density": {"units": "cm-3", "long_name": "surface density of H nuclei"},
    "mass": {"units": "Msun", "long_name": "clump mass"},
    "fuv": {"units": "Draine", "long_name": "FUV field in Draine units",
            "draine_erg_s_cm2": str(DRAINE_ERG_S_CM2)},
}


class HolesRefused(Exception):
    """The model set was not written: some n-χ plane is incomplete or irregular. ``result`` holds what was."""

    def __init__(self, result: ExportResult) -> None:
        planes_text = "; ".join(f"{plane}: {', '.join(cells[:6])}{' ...' if len(cells) > 6 else ''}"
                                for plane, cells in result.holes.items())
        super().__init__(f"the pdrtpy model set needs complete regular n-FUV planes; holes: {planes_text} "
                         "(--allow-holes writes them as NaN)")
        self.result = result


@dataclass
class ExportResult:
    out_dir: Path
    dataset: Path
    csv: Path
    parquet: Path | None
    coverage_json: Path
    coverage: Coverage
    standin: bool
    modelset: ModelSetFiles | None = None
    holes: dict[str, list[str]] = field(default_factory=dict)  # plane -> cells without a value
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        extra = list(self.modelset.fits) + [self.modelset.table] if self.modelset else []
        return [p for p in (self.dataset, self.csv, self.parquet, self.coverage_json) if p is not None] + extra


def pdrflow_version() -> str:
    try:
        return metadata.version("pdrflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _attrs(info: Any) -> dict[str, Any]:
    attrs = {"units": info.units, "long_name": info.long_name}
    for name in ("species", "wavelength_um", "line"):
        value = getattr(info, name)
        if value is not None:
            attrs[name] = value
    return attrs


def outlier_labels(cube: GridCube, found: list[dict[str, Any]]) -> np.ndarray:
    labels = np.full(cube.shape, "", dtype=object)
    for entry in found:
        index = cube.cell[entry["job"]]
        labels[index] = ",".join(filter(None, [labels[index], entry["quantity"]]))
    return labels


def to_dataset(cube: GridCube, cover: Coverage, provenance: dict[str, Any], standin: bool, created: str) -> Any:
    import xarray as xr

    coords: dict[str, Any] = {}
    for axis, values in cube.axis_values.items():
        attrs = AXIS_ATTRS.get(axis, {"long_name": f"varied KOSMA-tau parameter {axis}"})
        data = np.asarray(values, dtype=object if any(isinstance(v, str) for v in values) else float)
        if data.dtype == object:
            data = data.astype(str)
        coords[axis] = (axis, data, attrs) if axis in cube.dims else ((), data[0], attrs)
    fuv = np.asarray(cube.axis_values["fuv"], dtype=float)
    coords["fuv_cgs"] = ("fuv", fuv * DRAINE_ERG_S_CM2,
                         {"units": "erg s-1 cm-2", "long_name": "FUV field (6-13.6 eV)",
                          "draine_erg_s_cm2": str(DRAINE_ERG_S_CM2)})
    variables: dict[str, Any] = {
        "state": (cube.dims, cube.state.astype(str), {"long_name": "job state in the ledger ('absent': no job)"}),
        "job": (cube.dims, cube.names.astype(str), {"long_name": "job (archive) name"}),
        "outliers": (cube.dims, outlier_labels(cube, cover.outliers).astype(str),
                     {"long_name": "quantities far from their n-FUV neighbours (flagged, kept)"}),
    }
    for key, array in cube.values.items():
        variables[key] = (cube.dims, array, _attrs(cube.info[key]))
    executables = {f"{e['role']}_{what}": e[what] for e in provenance["executables"] for what in ("sha256", "revision")
                   if len([x for x in provenance["executables"] if x["role"] == e["role"]]) == 1}
    dataset_attrs: dict[str, Any] = {
        "title": f"pdrflow grid {cube.grid}" + (f" ({STANDIN_MARK})" if standin else ""),
        "grid": cube.grid,
        "source": "pdrflow stand-in, NOT KOSMA-tau" if standin else "KOSMA-tau",
        "standin": int(standin),
        "pdrflow_version": pdrflow_version(),
        "export_time": created,
        "draine_erg_s_cm2": DRAINE_ERG_S_CM2,
        **{k: str(v) for k, v in executables.items()},
        "provenance": json.dumps(provenance),
        "coverage_complete": int(cover.complete),
    }
    return xr.Dataset(variables, coords=coords, attrs=dataset_attrs)


def to_frame(cube: GridCube, cover: Coverage) -> Any:
    import pandas as pd

    labels = outlier_labels(cube, cover.outliers)
    rows = []
    for job in cube.jobs:
        index = cube.cell[job.name]
        row: dict[str, Any] = {"job": job.name, "state": job.state, "reason": job.reason,
                               "metallicity": job.metallicity, "density": job.density, "mass": job.mass,
                               "fuv": job.fuv, **{k: v for k, v in sorted(job.varied.items())}}
        row.update({key: float(array[index]) for key, array in cube.values.items()})
        row["outliers"] = labels[index]
        rows.append(row)
    return pd.DataFrame(rows)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def export_grid(config: Config, out: Path, ratios: list[str] | None = None, allow_holes: bool = False) -> ExportResult:
    """Read the grid once from its ledger and archive and write every export file into ``out``.

    Raises :class:`HolesRefused` (after writing the dataset, tables and coverage) when the model set
    would have holes and ``allow_holes`` is false; pdrflow.results.ResultsError / StorageError when the
    ledger or archive cannot be read; ValueError for a malformed ratio."""
    wanted = list(config.results.line_ratios if ratios is None else ratios)
    for ratio in wanted:
        parse_ratio(ratio)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open_archive(config) as reader:
        cube = collect_cube(reader)
        provenance = provenance_summary(reader)
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    standin = bool(provenance["standin_models"]) or (config.kosma_tau.standin and not provenance["kosma_tau_models"])
    cover = coverage(cube, config.results.outlier_dex)
    dataset = to_dataset(cube, cover, provenance, standin, created)
    nc = out / "grid.nc"
    dataset.to_netcdf(nc, engine="h5netcdf")
    frame = to_frame(cube, cover)
    csv = out / "grid.csv"
    frame.to_csv(csv, index=False)
    notes = list(cube.notes)
    parquet: Path | None = out / "grid.parquet"
    try:
        frame.to_parquet(parquet, index=False)
    except ImportError:
        parquet = None
        notes.append("grid.parquet not written: pyarrow is not installed (pip install pdrflow[parquet])")
    coverage_json = out / "coverage.json"
    coverage_json.write_text(json.dumps(cover.to_json(), indent=1, default=_json_default))
    result = ExportResult(out, nc, csv, parquet, coverage_json, cover, standin, notes=notes)
    every_image = images(cube, wanted, result.notes)
    grid_planes = list(planes(cube))
    try:
        result.holes = plane_holes(cube, grid_planes, every_image)
    except IrregularAxis as exc:
        result.holes = {"all planes": [str(exc)]}
        raise HolesRefused(result) from None  # an uneven axis cannot be an image, holes or not
    if result.holes and not allow_holes:
        raise HolesRefused(result)
    result.modelset = write_model_set(cube, out, grid_planes, every_image, provenance, standin, pdrflow_version())
    return result
