"""The grid as a PDR Toolbox model set: FITS images over log n x log FUV, and the tables pdrtpy reads.

Layout (under ``DIR/pdrtpy``): one directory per n-χ plane, ``Z=<z>/M=<mass>[/<param>=<value>...]``,
holding ``<id>.fits`` per line intensity (``CII158.fits``), ``<num>_<den>.fits`` per line ratio
(``CII158_CI609.fits``) and ``models.tab`` (IPAC: numerator, denominator, ratio, filename, z, title),
and ``modelsets.tab`` beside them (pdrtpy's ``all_models.tab`` columns: PDRcode, name, version, path,
filename, medium, z, losangle, mass, description; ``path`` relative to the export directory).

Headers follow the KOSMA-tau model files pdrtpy ships (``ModelSet("kt2020", ...)``): NAXIS1 = density,
NAXIS2 = FUV; CTYPE1 ``log(n)`` in ``cm-3``, CTYPE2 ``log(FUV)`` in ``erg s-1 cm-2`` (the grid's Draine
values times ``DRAINE`` = 2.72e-3, pdrtpy's Draine unit), CRPIX 1, CRVAL/CDELT in dex; BUNIT
``erg s-1 cm-2 sr-1`` for intensities and blank for ratios; TITLE, ORIGIN, DATE, MASS, Z (and ABUNDZ,
the shipped files' name for it), CLUMPY F, MODELTYP, and HISTORY naming pdrflow and the executables.
Every value comes from the ledger: the plane's axes and the archived jobs' provenance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .coverage import Lattice, Plane, hole_names, lattice, plane_matrix
from .cube import GridCube
from .lines import CATALOGUE, DRAINE_ERG_S_CM2, LineId, file_stem, parse_ratio, ratio_title

MEDIUM = "non-clumpy"  # pdrtpy's name for KOSMA-tau single-clump models
INTENSITY_UNIT = "erg s-1 cm-2 sr-1"


@dataclass(frozen=True)
class Image:
    identifier: str  # pdrtpy id: "CII_158" or "CII_158/CI_609"
    numerator: str
    denominator: str  # "1" for an intensity
    title: str
    bunit: str

    @property
    def filename(self) -> str:
        return file_stem(self.identifier)


@dataclass(frozen=True)
class ModelSetFiles:
    directory: Path
    table: Path  # modelsets.tab
    planes: tuple[Path, ...]
    fits: tuple[Path, ...]


def images(cube: GridCube, ratios: list[str], notes: list[str]) -> list[Image]:
    """The intensity image of every line some model has, then each requested ratio whose lines exist."""
    known = {line.id: line for line in CATALOGUE}
    lines = cube.line_ids()
    result = []
    for identifier in lines:
        title = known[identifier].title if identifier in known else cube.info[f"I_{identifier}"].long_name
        result.append(Image(identifier, identifier, "1", title, INTENSITY_UNIT))
    for ratio in ratios:
        numerator, denominator = parse_ratio(ratio)
        absent = [i for i in (numerator, denominator) if i not in lines]
        if absent:
            notes.append(f"ratio {ratio}: no archived line {', '.join(absent)}; no model image")
            continue
        title = ratio_title(_line(known, numerator, cube), _line(known, denominator, cube))
        result.append(Image(ratio, numerator, denominator, title, ""))
    return result


def _line(known: dict[str, LineId], identifier: str, cube: GridCube) -> LineId | str:
    return known.get(identifier) or cube.info[f"I_{identifier}"].long_name.split(" (")[0]


def image_data(cube: GridCube, image: Image, plane: Plane) -> np.ndarray:
    numerator = plane_matrix(cube, cube.value(f"I_{image.numerator}"), plane)
    if image.denominator == "1":
        return numerator.astype(float)
    denominator = plane_matrix(cube, cube.value(f"I_{image.denominator}"), plane)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def on_lattice(matrix: np.ndarray, density: Lattice, fuv: Lattice) -> np.ndarray:
    """The values placed on the full even lattice: NaN at whole steps the grid skips."""
    full = np.full((fuv.size, density.size), np.nan)
    full[np.ix_(list(fuv.index), list(density.index))] = matrix
    return full


def plane_holes(cube: GridCube, planes_: list[Plane], all_images: list[Image]) -> dict[str, list[str]]:
    """Per plane (its title), the cells some image has no value in."""
    density, fuv = lattice(cube.axis_values["density"], "density"), lattice(cube.axis_values["fuv"], "fuv")
    holes: dict[str, list[str]] = {}
    for plane in planes_:
        found: dict[str, None] = {}
        skipped = [f"n={10 ** density.log_value(i):.4g} (a step the grid skips)"
                   for i in sorted(set(range(density.size)) - set(density.index))]
        skipped += [f"FUV={10 ** fuv.log_value(i):.4g} (a step the grid skips)"
                    for i in sorted(set(range(fuv.size)) - set(fuv.index))]
        for image in all_images:
            for hole in hole_names(cube, image_data(cube, image, plane), plane):
                found.setdefault(hole)
        if found or skipped:
            holes[plane.title()] = [*skipped, *found]
    return holes


def header_cards(cube: GridCube, image: Image, plane: Plane, density: Lattice, fuv: Lattice, standin: bool,
                 created: str) -> list[tuple[Any, ...]]:
    cards: list[tuple[Any, ...]] = [
        ("DATE", created, "file creation date (YYYY-MM-DDThh:mm:ss UT)"),
        ("CTYPE1", "log(n)"), ("CUNIT1", "cm-3"), ("CRPIX1", 1.0), ("CRVAL1", density.log_start),
        ("CDELT1", density.log_step),
        ("CTYPE2", "log(FUV)"), ("CUNIT2", "erg s-1 cm-2"), ("CRPIX2", 1.0),
        ("CRVAL2", fuv.log_start + float(np.log10(DRAINE_ERG_S_CM2))), ("CDELT2", fuv.log_step),
        ("DRAINE", DRAINE_ERG_S_CM2, "erg s-1 cm-2 per Draine unit (log(FUV) axis)"),
        ("BUNIT", image.bunit), ("TITLE", image.title), ("MODELTYP", "ratio" if image.bunit == "" else "intensity"),
        ("MASS", float(plane.labels["mass"]), "clump mass in solar masses"),
        ("Z", float(plane.labels["metallicity"]), "metallicity wrt solar"),
        ("ABUNDZ", float(plane.labels["metallicity"]), "Dust and Metals wrt local ISM (Z=1)"),
        ("CLUMPY", False), ("ORIGIN", "pdrflow"), ("GRID", cube.grid[:68], "pdrflow grid name"),
        ("STANDIN", standin, "made by pdrflow's stand-in, NOT KOSMA-tau" if standin else "made by KOSMA-tau"),
    ]
    for name, value in plane.labels.items():
        if name not in ("metallicity", "mass") and len(name) <= 8:
            cards.append((name.upper(), value, "varied KOSMA-tau parameter"))
    return cards


def history(cube: GridCube, provenance: dict[str, Any], standin: bool, version: str) -> list[str]:
    lines = [f"pdrflow {version}: export of grid {cube.grid} from its ledger and archive",
             "stand-in, NOT KOSMA-tau: pdrflow's test programs made these values" if standin
             else "KOSMA-tau models (Roellig et al. 2006, Roellig & Ossenkopf-Okada 2022)"]
    for exe in provenance.get("executables", []):
        lines.append(f"{exe['role']} revision {exe['revision']} compiled {exe['compiled']} sha256 {exe['sha256']} "
                     f"({exe['models']} models)")
    lines.append(f"FUV axis: Draine units x {DRAINE_ERG_S_CM2} erg s-1 cm-2")
    lines.append("PhotoDissociation Region Toolbox: http://pdrtpy.readthedocs.io")
    return lines


def plane_directory(plane: Plane) -> str:
    parts = [f"Z={float(plane.labels['metallicity']):g}", f"M={float(plane.labels['mass']):g}"]
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in plane.labels.items()
              if k not in ("metallicity", "mass")]
    return "/".join(parts)


def write_model_set(cube: GridCube, out: Path, planes_: list[Plane], all_images: list[Image],
                    provenance: dict[str, Any], standin: bool, version: str) -> ModelSetFiles:
    from astropy.io import fits
    from astropy.table import MaskedColumn, Table

    density, fuv = lattice(cube.axis_values["density"], "density"), lattice(cube.axis_values["fuv"], "fuv")
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    root = out / "pdrtpy"
    written: list[Path] = []
    directories: list[Path] = []
    sets: list[dict[str, Any]] = []
    lines = history(cube, provenance, standin, version)
    for plane in planes_:
        directory = root / plane_directory(plane)
        directory.mkdir(parents=True, exist_ok=True)
        directories.append(directory)
        rows = []
        for image in all_images:
            data = on_lattice(image_data(cube, image, plane), density, fuv)
            header = fits.Header()
            for card in header_cards(cube, image, plane, density, fuv, standin, created):
                header[card[0]] = card[1:] if len(card) > 2 else card[1]
            finite = data[np.isfinite(data)]
            if len(finite):
                header["DATAMIN"], header["DATAMAX"] = float(finite.min()), float(finite.max())
            for text in lines:
                header.add_history(text)
            path = directory / f"{image.filename}.fits"
            fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
            written.append(path)
            rows.append((image.numerator, image.denominator, image.identifier, image.filename,
                         float(plane.labels["metallicity"]), image.title))
        table = Table(rows=rows, names=("numerator", "denominator", "ratio", "filename", "z", "title"),
                      dtype=(str, str, str, str, float, str))
        table.write(directory / "models.tab", format="ipac", overwrite=True)
        extra = " ".join(f"{k}={v}" for k, v in plane.labels.items() if k not in ("metallicity", "mass"))
        revision = next((e["revision"] for e in provenance.get("executables", []) if e["role"] == "pdr_executable"),
                        "unknown")
        sets.append({
            "PDRcode": "pdrflow stand-in (NOT KOSMA-tau)" if standin else "KOSMA-tau", "name": cube.grid,
            "version": str(revision), "path": os.path.relpath(directory, root) + "/", "filename": "models.tab",
            "medium": f"{MEDIUM} {extra}".strip(), "z": float(plane.labels["metallicity"]), "losangle": 0,
            "mass": float(plane.labels["mass"]),
            "description": f"pdrflow export of grid {cube.grid}, {plane.title()}"
                           + (", stand-in, NOT KOSMA-tau" if standin else ""),
        })
    names = ("PDRcode", "name", "version", "path", "filename", "medium", "z", "losangle", "mass", "description")
    table = Table({name: [s[name] for s in sets] for name in names})
    # pdrtpy tells KOSMA-tau sets (a mass per set) from others by the mask of this column.
    table["mass"] = MaskedColumn(table["mass"], mask=[False] * len(sets), unit="solMass")
    table["losangle"].unit = "deg"
    table.write(root / "modelsets.tab", format="ipac", overwrite=True)
    return ModelSetFiles(root, root / "modelsets.tab", tuple(directories), tuple(written))


def pdrtpy_modelset(export_dir: str | os.PathLike[str], z: float, mass: float, medium: str = MEDIUM) -> Any:
    """The exported model set of one plane as a ``pdrtpy.modelset.ModelSet`` (pdrtpy 3.x installed).

    pdrtpy looks for a model set's files relative to its own model directory; this reads
    ``modelsets.tab`` and points each set's path there, wherever the export lives."""
    from astropy.table import Table
    from pdrtpy.modelset import ModelSet
    from pdrtpy.utils import model_dir

    root = Path(export_dir) / "pdrtpy"
    read = Table.read(root / "modelsets.tab", format="ipac")
    rows = [{column: row[column] for column in read.colnames} for row in read]
    for row in rows:
        row["path"] = os.path.relpath(root / str(row["path"]), model_dir()) + "/"
    if len(rows) == 1:
        # pdrtpy 3.0.1 reads a one-row table's mass as a plain float and fails on its mask: a second row,
        # never matched (another medium), makes it a column.
        rows.append({**rows[0], "medium": f"{rows[0]['medium']} (unused)"})
    # masked=True: pdrtpy tells KOSMA-tau sets (a mass each) from others by the mass column's mask
    table = Table(rows=rows, names=read.colnames, masked=True)
    name = str(table["name"][0])
    return ModelSet(name, z=z, medium=medium, mass=mass, modelsetinfo=table)
