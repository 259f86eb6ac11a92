"""The archived files' formats: onion's line tables and the HDF5 structure and chemistry files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from ..config import ResultsConfig
from .outputs import LineTable

LINEBT_COLUMNS = ("transition", "wavelength_um", "intensity_erg_s_cm2_sr", "peak_tb_K")  # the stand-in's
_REQUIRED_PROFILES = ("depth_cm", "av", "tgas")
_OPTIONAL_PROFILES = ("tdust", "nh")
_SHOWN_DATASETS = 40  # an error lists at most this many of a file's datasets


def parse_linebt(text: str, species: str, columns: Iterable[str] = LINEBT_COLUMNS) -> LineTable:
    """A ``linebt_<S>.out`` table; ``columns``: the names of (transition, wavelength, intensity, peak T_B)
    in its last ``#`` header line. Raises ValueError naming the columns the table has when one is missing."""
    wanted = tuple(columns)
    header: list[str] = []
    rows: list[list[str]] = []
    for raw in text.splitlines():
        if raw.startswith("#"):
            header = raw.lstrip("#").split()
        elif raw.strip():
            rows.append(raw.split())
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ValueError(f"linebt table for {species} has no column {', '.join(missing)} (its columns: "
                         f"{' '.join(header) or 'no # header line'}; map them in the config's results.linebt)")
    index = [header.index(name) for name in wanted]
    try:
        numbers = np.array([[float(row[i]) for i in index[1:]] for row in rows], dtype=float).reshape(-1, 3)
    except (ValueError, IndexError):
        raise ValueError(f"linebt table for {species}: a row is not '{' '.join(header)}'") from None
    return LineTable(species, tuple(row[index[0]] for row in rows), numbers[:, 0], numbers[:, 1], numbers[:, 2])


def file_contents(f: h5py.File) -> str:
    """What an HDF5 file holds, for a message: its datasets with their shapes."""
    found: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            found.append(f"/{name} {item.shape}")

    f.visititems(visit)
    more = f" and {len(found) - _SHOWN_DATASETS} more" if len(found) > _SHOWN_DATASETS else ""
    return ", ".join(found[:_SHOWN_DATASETS]) + more if found else "no datasets"


def _dataset_name(mapping: ResultsConfig | None, name: str) -> str:
    return getattr(mapping.structure, name) if mapping is not None else name


def read_structure(path: Path, mapping: ResultsConfig | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(profiles, abundances, notes) from a ``pdrstruct`` HDF5 file, sorted surface first; dataset names
    from ``mapping.structure`` (the stand-in's without one)."""
    notes: list[str] = []
    with h5py.File(path, "r") as f:
        names = {name: _dataset_name(mapping, name) for name in (*_REQUIRED_PROFILES, *_OPTIONAL_PROFILES)}
        missing = [f"/{names[n]} ({n})" for n in _REQUIRED_PROFILES if not isinstance(f.get(names[n]), h5py.Dataset)]
        if missing:
            raise ValueError(f"{path.name} lacks {', '.join(missing)}; the file holds {file_contents(f)} "
                             "(map its datasets in the config's results.structure)")
        profiles = {name: np.asarray(f[names[name]][()], dtype=float) for name in _REQUIRED_PROFILES}
        order = np.argsort(profiles["depth_cm"], kind="stable")  # surface first, whatever the writer did
        for name in _OPTIONAL_PROFILES:
            if isinstance(f.get(names[name]), h5py.Dataset):
                profiles[name] = np.asarray(f[names[name]][()], dtype=float)
            else:
                notes.append(f"no /{names[name]} ({name}) in the structure file")
                profiles[name] = np.full(len(order), np.nan)
        group_name = _dataset_name(mapping, "abundances")
        group = f.get(group_name)
        abundances = {}
        if isinstance(group, h5py.Group):
            abundances = {name: np.asarray(item[()], dtype=float)[order] for name, item in group.items()
                          if isinstance(item, h5py.Dataset)}
        else:
            notes.append(f"no /{group_name} group (abundances) in the structure file; it holds {file_contents(f)}")
    return {name: values[order] for name, values in profiles.items()}, abundances, notes


def read_chemistry(path: Path, mapping: ResultsConfig | None = None) -> tuple[dict[str, float], list[str]]:
    """(column density by species [cm^-2], notes) from a ``pdrchem`` HDF5 file."""
    species_name = mapping.chemistry.species if mapping is not None else "species"
    columns_name = mapping.chemistry.column_density if mapping is not None else "column_density"
    with h5py.File(path, "r") as f:
        species, columns = f.get(species_name), f.get(columns_name)
        if not isinstance(species, h5py.Dataset) or not isinstance(columns, h5py.Dataset):
            note = (f"{path.name} has no /{species_name} and /{columns_name} (column densities); it holds "
                    f"{file_contents(f)} (map them in the config's results.chemistry)")
            return {}, [note]
        names = [n.decode("ascii", "replace") if isinstance(n, bytes) else str(n) for n in species[()]]
        values = np.asarray(columns[()], dtype=float).reshape(-1)
    if len(names) != len(values):
        return {}, [f"{path.name}: {len(names)} species but {len(values)} column densities"]
    return {name.strip(): float(value) for name, value in zip(names, values, strict=True)}, []
