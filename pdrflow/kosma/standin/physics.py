"""Analytic PDR scalings of the stand-in (NOT KOSMA-tau) and the HDF5 files they are written to.

``pdrstruct_s.hdf5`` (attributes: the input parameters and ``standin``):
  ``depth_cm``   distance from the clump surface [cm], 200 points to the centre (RTOT)
  ``nh``         total H density [cm^-3]: XNSUR·(r/RTOT)^-ALPHA outside RCORE·RTOT, constant inside
  ``column_h``   H column from the surface [cm^-2];  ``av``  visual extinction = column_h/1.87e21·ZMETAL
  ``tgas``, ``tdust``   gas and dust temperature [K]
  ``abundances/<species>``  abundance relative to H nuclei for H, H2, C+, C, CO, 13C+, 13C, 13CO,
                            O, e-, HCO+, H13CO+, OH, CH+
  ``onion/<species>``       added by onion (see onion.py)
``pdrchem_c.hdf5``: ``species`` (names), ``abundance`` (species × depth), ``column_density`` [cm^-2].

Scalings: with x = χ/(n/10^3), the H→H2 transition lies at A_V ≈ 0.05 + 0.2·ln(1+x) and the
C+/C/CO transitions at A_V ≈ 0.6·A_CO and A_CO ≈ 1 + 0.7·ln(1+x); the surface gas temperature rises
with χ and falls with n. Good enough to make grid maps look like PDR grids; not physics.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

POINTS = 200
SPECIES = ("H", "H2", "C+", "C", "CO", "13C+", "13C", "13CO", "O", "e-", "HCO+", "H13CO+", "OH", "CH+")


@dataclass(frozen=True)
class Model:
    xnsur: float
    sint: float
    zmetal: float
    rtot: float
    alpha: float
    rcore: float
    cosray: float
    carbon: float  # C/H
    carbon13: float  # 13C/H
    oxygen: float  # O/H

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> Model:
        physical = config["physical_params"]
        elements = config["element_abundances"]
        assert isinstance(physical, dict) and isinstance(elements, dict)
        return cls(
            xnsur=float(physical["xnsur"]), sint=float(physical["sint"]), zmetal=float(physical["zmetal"]),
            rtot=float(physical["rtot"]), alpha=float(physical["alpha"]), rcore=float(physical["rcore"]),
            cosray=float(physical["cosray"]), carbon=float(elements["C"]), carbon13=float(elements["13C"]),
            oxygen=float(elements["O"]),
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def profiles(model: Model) -> dict[str, np.ndarray]:
    depth = np.linspace(0.0, model.rtot, POINTS)
    radius = np.maximum(model.rtot - depth, model.rcore * model.rtot)
    nh = model.xnsur * (radius / model.rtot) ** (-model.alpha)
    column = np.concatenate([[0.0], np.cumsum(0.5 * (nh[1:] + nh[:-1]) * np.diff(depth))])
    av = column / 1.87e21 * model.zmetal
    x = model.sint / (model.xnsur / 1e3)
    t_floor = 10.0 + 5.0 * math.log10(1.0 + model.cosray / 2e-16)
    t_surface = min(5000.0, max(t_floor + 5.0, 60.0 * (1.0 + x) ** 0.35))
    tgas = t_floor + (t_surface - t_floor) * np.exp(-av / 0.7)
    tdust = 8.0 + 12.0 * model.sint ** 0.2 * np.exp(-av / 2.0)
    av_h2 = 0.05 + 0.2 * math.log1p(x)
    av_co = 1.0 + 0.7 * math.log1p(x)
    h2 = _sigmoid((av - av_h2) / 0.05)
    carbon = model.carbon * model.zmetal
    co = carbon * _sigmoid((av - av_co) / 0.25)
    c_plus = carbon * (1.0 - _sigmoid((av - 0.6 * av_co) / 0.2))
    c_atom = np.clip(carbon - co - c_plus, 0.0, None)
    ratio13 = model.carbon13 / model.carbon
    oxygen = np.clip(model.oxygen * model.zmetal - co, 0.0, None)
    abundances = {
        "H": 1.0 - h2, "H2": 0.5 * h2, "C+": c_plus, "C": c_atom, "CO": co,
        "13C+": c_plus * ratio13, "13C": c_atom * ratio13, "13CO": co * ratio13, "O": oxygen,
        "e-": c_plus + 1e-8 * (model.cosray / 2e-16), "HCO+": 1e-9 * h2 * (co / carbon + 1e-3),
        "OH": 1e-8 * h2 * np.exp(-np.abs(av - av_h2)), "CH+": 1e-9 * c_plus / carbon * (1.0 - h2) * tgas / 100.0,
    }
    abundances["H13CO+"] = abundances["HCO+"] * ratio13
    return {"depth_cm": depth, "nh": nh, "column_h": column, "av": av, "tgas": tgas, "tdust": tdust,
            **{f"abundances/{name}": values for name, values in abundances.items()}}


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    # track_times=False: identical inputs give byte-identical files (same sha256 in the ledger)
    group.create_dataset(name, data=data, track_times=False)


def write_structure(path: Path, model: Model, data: Mapping[str, np.ndarray], pad_mb: float) -> None:
    with h5py.File(path, "w", track_order=True) as f:
        for key, value in vars(model).items():
            f.attrs[key] = value
        f.attrs["standin"] = "pdrflow stand-in, NOT KOSMA-tau"
        for name, values in data.items():
            _dataset(f, name, values)
        if pad_mb > 0:
            seed = int.from_bytes(hashlib.sha256(repr(sorted(vars(model).items())).encode()).digest()[:8], "big")
            padding = np.random.default_rng(seed).integers(0, 256, int(pad_mb * 1024 * 1024), dtype=np.uint8)
            _dataset(f, "padding", padding)


def write_chemistry(path: Path, data: Mapping[str, np.ndarray]) -> None:
    names = list(SPECIES)
    matrix = np.vstack([data[f"abundances/{name}"] for name in names])
    steps = np.diff(data["depth_cm"])
    density = matrix * data["nh"]
    columns = (0.5 * (density[:, 1:] + density[:, :-1]) * steps).sum(axis=1)  # trapezoid rule
    with h5py.File(path, "w", track_order=True) as f:
        _dataset(f, "species", np.array([n.encode() for n in names]))
        _dataset(f, "abundance", matrix)
        _dataset(f, "column_density", columns)
