"""Analytic PDR scalings of the stand-in (NOT KOSMA-tau) and the HDF5 files they are written to.

``pdrstruct_s.hdf5`` — one clump, depth profiles from the surface (depth 0) to the centre (RTOT).
Root attributes: the physical inputs ``xnsur, alpha, rcore, sigd, rtot, sint, cosray, beta, zmetal``,
``ifuvmeth``, element abundances ``elem_<key>`` (``elem_C``, ``elem_13C``, ...), ``standin`` (says it
is not KOSMA-tau) and ``generator`` (stand-in revision). Datasets (float64, length ``POINTS``):

  ``/depth_cm``   distance from the clump surface [cm]; log-spaced near the surface
  ``/radius_cm``  distance from the clump centre, RTOT - depth [cm]
  ``/nh``         total H nuclei density [cm^-3]: XNSUR·(r/RTOT)^-ALPHA, constant inside RCORE·RTOT
  ``/column_h``   H nuclei column from the surface [cm^-2]
  ``/av``         visual extinction from the surface, column_h / 1.87e21 · ZMETAL [mag]
  ``/fuv``        attenuated FUV field, SINT·exp(-1.8·A_V) [Draine units]
  ``/tgas``, ``/tdust``   gas and dust temperature [K]
  ``/abundances/<species>``  abundance relative to H nuclei for each name in ``SPECIES``
  ``/padding``    uint8, only with PDRFLOW_STANDIN_OUTPUT_MB (deterministic filler)
  ``/onion/<S>``  added by onionexe for species S (see onion.py)

``pdrchem_c.hdf5`` — chemistry summary: ``/species`` (fixed-length ASCII names, the ``SPECIES``
order), ``/abundance`` (species x depth, relative to H nuclei), ``/column_density`` (per species,
surface to centre [cm^-2]), ``/depth_cm``, ``/av``, and ``/network_species`` (the network named in
the inputs; the stand-in models only ``SPECIES``).

Scalings, with x = SINT/(XNSUR/10^3): surface T_gas = 40·χ^0.3·(n/10^3)^-0.1 K falling as
exp(-A_V/0.8) to a cosmic-ray floor; T_dust = (8^5 + (12·χ^0.2)^5·e^-A_V)^(1/5) K; the H→H2
transition at A_V = 0.05 + 0.1·ln(1+x); C→CO at A_V = 1 + 3·y/(y+3) with y = log10(1+x) (1..4),
C+→C at 0.7 of that. Carbon, 13C and oxygen species are scaled by their element abundances x ZMETAL.
Good enough to make grid maps look like PDR grids; not physics.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

POINTS = 256
SPECIES = ("H", "H2", "e-", "C+", "C", "CO", "13C+", "13C", "13CO", "O", "OH", "CH+", "HCO+", "H13CO+")
PHYSICAL_KEYS = ("xnsur", "alpha", "rcore", "sigd", "rtot", "sint", "cosray", "beta", "zmetal")
AV_PER_NH = 1.0 / 1.87e21  # mag cm^2 at solar metallicity
STANDIN_LABEL = "pdrflow stand-in, NOT KOSMA-tau"


@dataclass(frozen=True)
class Model:
    xnsur: float
    alpha: float
    rcore: float
    sigd: float
    rtot: float
    sint: float
    cosray: float
    beta: float
    zmetal: float
    ifuvmeth: int
    elements: tuple[tuple[str, float], ...]  # (pdr_config.json key, abundance relative to H)
    network_species: tuple[str, ...]

    def element(self, key: str) -> float:
        return dict(self.elements)[key]

    def validate(self) -> None:
        problems = [name for name, ok in (
            ("xnsur > 0", self.xnsur > 0), ("rtot > 0", self.rtot > 0), ("sint >= 0", self.sint >= 0),
            ("zmetal > 0", self.zmetal > 0), ("0 <= alpha < 3", 0 <= self.alpha < 3),
            ("0 < rcore < 1", 0 < self.rcore < 1), ("cosray >= 0", self.cosray >= 0),
            ("element abundances >= 0", all(v >= 0 for _, v in self.elements)),
        ) if not ok]
        if problems:
            raise ValueError(f"parameters out of range: need {', '.join(problems)}")

    def attributes(self) -> dict[str, float | int | str]:
        attrs: dict[str, float | int | str] = {key: getattr(self, key) for key in PHYSICAL_KEYS}
        attrs["ifuvmeth"] = self.ifuvmeth
        attrs.update({f"elem_{key}": value for key, value in self.elements})
        return attrs

    def digest(self) -> bytes:
        """A stable hash of the inputs (seeds the padding; same inputs, same bytes)."""
        return hashlib.sha256(repr((sorted(self.attributes().items()), self.network_species)).encode()).digest()


@dataclass(frozen=True)
class Transitions:
    """Where the chemical transitions lie, in A_V."""

    av_h2: float
    av_cplus: float
    av_co: float


def transitions(model: Model) -> Transitions:
    x = model.sint / (model.xnsur / 1e3)
    y = math.log10(1.0 + x)
    av_co = 1.0 + 3.0 * y / (y + 3.0)  # 1 at low χ/n, approaching 4 at high χ/n
    return Transitions(av_h2=0.05 + 0.1 * math.log1p(x), av_cplus=0.7 * av_co, av_co=av_co)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))  # clip: no overflow warnings
    return result


def structure(model: Model) -> dict[str, np.ndarray]:
    """Depth grid, density, column, A_V, FUV field and temperatures."""
    # Log-spaced near the surface so that thin transition layers of large clumps are resolved.
    depth = model.rtot * np.concatenate([[0.0], np.geomspace(1e-6, 1.0, POINTS - 1)])
    radius = model.rtot - depth
    nh = model.xnsur * (np.maximum(radius, model.rcore * model.rtot) / model.rtot) ** (-model.alpha)
    column = np.concatenate([[0.0], np.cumsum(0.5 * (nh[1:] + nh[:-1]) * np.diff(depth))])
    av = column * AV_PER_NH * model.zmetal
    cr = model.cosray / 2e-16
    t_floor = 8.0 + 4.0 * cr ** 0.25  # cosmic-ray heating keeps dark gas above ~10 K
    t_fuv = 40.0 * model.sint ** 0.3 * (nh / 1e3) ** -0.1 * np.exp(-av / 0.8)
    tgas = np.minimum(t_floor + t_fuv, 5000.0)
    tdust = (8.0 ** 5 + (12.0 * model.sint ** 0.2) ** 5 * np.exp(-av)) ** 0.2
    return {"depth_cm": depth, "radius_cm": radius, "nh": nh, "column_h": column, "av": av,
            "fuv": model.sint * np.exp(-1.8 * av), "tgas": tgas, "tdust": tdust}


def abundances(model: Model, av: np.ndarray, nh: np.ndarray, tgas: np.ndarray) -> dict[str, np.ndarray]:
    """Abundances relative to H nuclei for ``SPECIES``."""
    where = transitions(model)
    z = model.zmetal
    f_h2 = _sigmoid((av - where.av_h2) / (0.02 + 0.1 * where.av_h2))  # fraction of H nuclei in H2
    f_co = _sigmoid((av - where.av_co) / 0.25)  # fraction of carbon in CO
    f_cplus = 1.0 - _sigmoid((av - where.av_cplus) / 0.2)
    f_c = np.clip(1.0 - f_co - f_cplus, 0.0, 1.0)
    carbon, carbon13, oxygen = (model.element(key) * z for key in ("C", "13C", "O"))
    cr = model.cosray / 2e-16
    ion = 1e-8 * np.sqrt(cr / (nh / 1e3))  # cosmic-ray ionisation of the dark gas
    hco = 1e-9 * np.sqrt(cr / (nh / 1e4)) * f_h2 * (f_co + 1e-2)
    oh = 1e-8 * (model.element("O") / 4.47e-4) * z * f_h2 * np.exp(-np.abs(av - where.av_h2))
    result = {
        "H": 1.0 - f_h2, "H2": 0.5 * f_h2, "e-": (carbon + carbon13) * f_cplus + ion,
        "C+": carbon * f_cplus, "C": carbon * f_c, "CO": carbon * f_co,
        "13C+": carbon13 * f_cplus, "13C": carbon13 * f_c, "13CO": carbon13 * f_co,
        "O": np.clip(oxygen - (carbon + carbon13) * f_co - oh, 0.0, None), "OH": oh,
        # CH+ needs warm H2 and C+ (C+ + H2 -> CH+ + H is endothermic)
        "CH+": 1e-8 * z * f_cplus * f_h2 * np.exp(-400.0 / tgas),
        "HCO+": hco, "H13CO+": hco * (carbon13 / carbon if carbon > 0 else 0.0),
    }
    return {name: result[name] for name in SPECIES}


def profiles(model: Model) -> dict[str, np.ndarray]:
    """Everything written to ``pdrstruct_s.hdf5`` (abundances as ``abundances/<species>``)."""
    data = structure(model)
    chem = abundances(model, data["av"], data["nh"], data["tgas"])
    return {**data, **{f"abundances/{name}": values for name, values in chem.items()}}


def column_densities(data: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-species column density from the surface to the centre [cm^-2] (trapezoid rule)."""
    steps = np.diff(data["depth_cm"])
    result = {}
    for name in SPECIES:
        density = data[f"abundances/{name}"] * data["nh"]
        result[name] = float((0.5 * (density[1:] + density[:-1]) * steps).sum())
    return result


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    # track_times=False: identical inputs give byte-identical files (same sha256 in the ledger)
    group.create_dataset(name, data=data, track_times=False)


def _names(names: tuple[str, ...] | list[str]) -> np.ndarray:
    # fixed-length ASCII, not variable-length strings: plain bytes that compare and hash stably
    return np.array([n.encode("ascii") for n in names], dtype=f"S{max([len(n) for n in names] + [1])}")


def write_structure(path: Path, model: Model, data: Mapping[str, np.ndarray], pad_mb: float,
                    generator: str) -> None:
    with h5py.File(path, "w", track_order=True) as f:
        for key, value in model.attributes().items():
            f.attrs[key] = value
        f.attrs["standin"] = STANDIN_LABEL
        f.attrs["generator"] = generator
        for name, values in data.items():
            _dataset(f, name, values)
        padding = int(pad_mb * 2**20) - sum(v.nbytes for v in data.values())
        if pad_mb > 0 and padding > 0:
            seed = int.from_bytes(model.digest()[:8], "big")
            _dataset(f, "padding", np.random.default_rng(seed).integers(0, 256, padding, dtype=np.uint8))


def write_chemistry(path: Path, model: Model, data: Mapping[str, np.ndarray]) -> None:
    columns = column_densities(data)
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["standin"] = STANDIN_LABEL
        _dataset(f, "species", _names(SPECIES))
        _dataset(f, "abundance", np.vstack([data[f"abundances/{name}"] for name in SPECIES]))
        _dataset(f, "column_density", np.array([columns[name] for name in SPECIES]))
        _dataset(f, "depth_cm", data["depth_cm"])
        _dataset(f, "av", data["av"])
        _dataset(f, "network_species", _names(list(model.network_species)))
