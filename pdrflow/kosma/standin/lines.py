"""The stand-in's line transfer through a spherical clump (NOT KOSMA-tau's onion).

``ONION3.INP`` of the stand-in (shipped as ``home/onioninpdata/ONION3.INP.<S>``)::

    * comment lines start with '*'
    SPECIES <S>
    LINE <transition> <wavelength_um> <E_up_K> <n_crit_cm-3> <N_tau1_cm-2>
    LINE ...

``<S>`` names ``/abundances/<S>`` in ``pdrstruct_s.hdf5``. Per transition: the upper level energy,
the critical density, and the column giving line-centre optical depth 1 for a 1 km/s wide line.

Model: two-level excitation with a Rayleigh-Jeans-corrected source function
J(T_ex) = T0/((1 + n_crit/n)·exp(T0/T_kin) - 1), T0 = h nu/k; line opacity per cell
n_S·ds/(N_tau1·Δv)·exp(-(E_up - T0)/T_kin); formal solution along straight rays at impact parameters
p through the sphere, minus the cosmic background. Δv (FWHM) is BETA if positive, else Larson's
1.1 km/s·(2·RTOT/pc)^0.38. Dust continuum: opacity 1e-25 cm² per H·Z·(250 µm/λ)^1.8, source J(T_dust).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

H_OVER_K = 4.799243e-11  # h/k [K s]
K_BOLTZMANN = 1.380649e-16  # erg/K
C_CM = 2.99792458e10  # cm/s
PARSEC_CM = 3.0857e18
T_BACKGROUND = 2.725  # K
IMPACT_PARAMETERS = 24  # rays across the projected clump disc


@dataclass(frozen=True)
class Transition:
    name: str
    wavelength_um: float
    e_up_k: float
    n_crit: float
    n_tau1: float

    @property
    def frequency_hz(self) -> float:
        return C_CM / (self.wavelength_um * 1e-4)

    @property
    def t0(self) -> float:
        return H_OVER_K * self.frequency_hz

    def erg_per_k_kms(self) -> float:
        """Integrated intensity [erg s^-1 cm^-2 sr^-1] of a line of 1 K over 1 km/s (2k nu^3/c^3·Δv)."""
        return 2.0 * K_BOLTZMANN * self.frequency_hz ** 3 / C_CM ** 3 * 1e5


def parse_onion_input(text: str) -> tuple[str, list[Transition]]:
    species: str | None = None
    found: list[Transition] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split()
        if not words or raw.startswith("*"):
            continue
        if words[0] == "SPECIES" and len(words) == 2:
            species = words[1]
        elif words[0] == "LINE" and len(words) == 6:
            try:
                values = [float(w) for w in words[2:]]
            except ValueError:
                raise ValueError(f"line {number}: numbers expected in {raw.strip()!r}") from None
            if min(values[0], values[2], values[3]) <= 0 or values[1] < 0:
                raise ValueError(f"line {number}: wavelength, n_crit and N_tau1 must be > 0, E_up >= 0")
            found.append(Transition(words[1], *values))
        else:
            raise ValueError(f"line {number}: expected SPECIES <name> or LINE <transition> <wavelength_um> "
                             f"<E_up_K> <n_crit_cm-3> <N_tau1_cm-2>, got {raw.strip()!r}")
    if species is None or not found:
        raise ValueError("no SPECIES line or no LINE line")
    return species, found


def read_onion_input(path: Path) -> tuple[str, list[Transition]]:
    try:
        return parse_onion_input(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path.name}: {exc}") from None


def line_width_kms(beta_cm_s: float, rtot_cm: float) -> float:
    if beta_cm_s > 0:
        return beta_cm_s / 1e5
    return float(1.1 * (2.0 * rtot_cm / PARSEC_CM) ** 0.38)  # Larson (1981), as BETA < 0 asks


@dataclass(frozen=True)
class Clump:
    """Radial profiles, radius ascending (centre first)."""

    radius: np.ndarray
    nh: np.ndarray
    tgas: np.ndarray
    tdust: np.ndarray
    n_species: np.ndarray
    zmetal: float

    @classmethod
    def from_depth_profiles(cls, radius: np.ndarray, nh: np.ndarray, tgas: np.ndarray, tdust: np.ndarray,
                            abundance: np.ndarray, zmetal: float) -> Clump:
        order = np.argsort(radius, kind="stable")
        return cls(radius[order], nh[order], tgas[order], tdust[order], (abundance * nh)[order], zmetal)

    @property
    def rtot(self) -> float:
        return float(self.radius[-1])


@dataclass(frozen=True)
class Ray:
    """Cells along one ray, ordered from the observer: near half inwards, far half outwards."""

    ds: np.ndarray
    nh: np.ndarray
    tgas: np.ndarray
    tdust: np.ndarray
    n_species: np.ndarray


def ray(clump: Clump, p: float) -> Ray:
    # Sample the chord at the radial grid points outside p, so the ray resolves what the grid resolves.
    r = np.concatenate([[p], clump.radius[clump.radius > p]])
    s = np.sqrt(np.maximum(r ** 2 - p ** 2, 0.0))
    s_mid = 0.5 * (s[1:] + s[:-1])
    r_mid = np.sqrt(p ** 2 + s_mid ** 2)
    ds = np.diff(s)

    def at(values: np.ndarray) -> np.ndarray:
        half = np.interp(r_mid, clump.radius, values)
        return np.concatenate([half[::-1], half])  # near half (surface inwards), then far half

    return Ray(np.concatenate([ds[::-1], ds]), at(clump.nh), at(clump.tgas), at(clump.tdust), at(clump.n_species))


def planck_k(t0: float, temperature: np.ndarray | float) -> np.ndarray:
    """Rayleigh-Jeans equivalent temperature J(T) = T0/(exp(T0/T) - 1)."""
    return t0 / np.expm1(np.minimum(t0 / np.asarray(temperature, dtype=float), 700.0))


def formal_solution(source: np.ndarray, dtau: np.ndarray) -> np.ndarray:
    """Emergent brightness, cumulative over the cells ordered from the observer."""
    tau_before = np.concatenate([[0.0], np.cumsum(dtau)[:-1]])
    return np.cumsum(source * -np.expm1(-dtau) * np.exp(-tau_before))


def line_cells(line: Transition, cells: Ray, width_kms: float) -> tuple[np.ndarray, np.ndarray]:
    t0 = line.t0
    boltzmann = np.exp(-np.minimum(t0 / cells.tgas, 700.0))
    source = t0 / ((1.0 + line.n_crit / cells.nh) / boltzmann - 1.0)
    lower = np.exp(-np.minimum(max(line.e_up_k - t0, 0.0) / cells.tgas, 700.0))
    dtau = cells.n_species * cells.ds / (line.n_tau1 * width_kms) * lower
    return source, dtau


def dust_cells(line: Transition, cells: Ray, zmetal: float) -> tuple[np.ndarray, np.ndarray]:
    sigma = 1e-25 * zmetal * (250.0 / line.wavelength_um) ** 1.8
    return planck_k(line.t0, cells.tdust), sigma * cells.nh * cells.ds


@dataclass(frozen=True)
class LineResult:
    transition: Transition
    impact: np.ndarray  # p/RTOT
    tb_line: np.ndarray  # line-centre Tb above background per ray [K]
    tb_total: np.ndarray  # line + dust continuum above background per ray [K]
    tau_centre: float  # line-centre optical depth through the clump centre
    width_kms: float

    @property
    def mean_tb(self) -> float:
        """Line-centre Tb averaged over the projected disc (area weights, Tb → 0 at the rim)."""
        p = np.append(self.impact, 1.0)
        tb = np.append(self.tb_line, 0.0)
        return float(np.sum(0.5 * (tb[1:] * p[1:] + tb[:-1] * p[:-1]) * np.diff(p)) * 2.0)

    def intensity(self, tb: float | np.ndarray) -> float | np.ndarray:
        """Integrated intensity of a Gaussian line of peak ``tb`` [erg s^-1 cm^-2 sr^-1]."""
        return self.transition.erg_per_k_kms() * 1.0645 * self.width_kms * tb


def transfer(clump: Clump, lines: list[Transition], width_kms: float) -> list[LineResult]:
    impacts = np.arange(IMPACT_PARAMETERS) / IMPACT_PARAMETERS
    rays = [ray(clump, float(p) * clump.rtot) for p in impacts]
    results = []
    for line in lines:
        background = float(planck_k(line.t0, T_BACKGROUND))
        tb_line, tb_total, tau_centre = [], [], 0.0
        for index, cells in enumerate(rays):
            s_line, t_line = line_cells(line, cells, width_kms)
            s_dust, t_dust = dust_cells(line, cells, clump.zmetal)
            tau = float(t_line.sum())
            tau_centre = tau if index == 0 else tau_centre
            tb_line.append(formal_solution(s_line, t_line)[-1] - background * -math.expm1(-tau))
            both = t_line + t_dust
            mixed = (s_line * t_line + s_dust * t_dust) / np.maximum(both, 1e-300)
            tb_total.append(formal_solution(mixed, both)[-1] - background * -math.expm1(-float(both.sum())))
        results.append(LineResult(line, impacts, np.array(tb_line), np.array(tb_total), tau_centre, width_kms))
    return results


def surface_profile(clump: Clump, line: Transition, width_kms: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth [cm], emergent intensity of the slab between the surface and that depth), central ray."""
    cells = ray(clump, 0.0)
    half = len(cells.ds) // 2
    near = Ray(cells.ds[:half], cells.nh[:half], cells.tgas[:half], cells.tdust[:half], cells.n_species[:half])
    source, dtau = line_cells(line, near, width_kms)
    depth = np.cumsum(near.ds)
    return depth, line.erg_per_k_kms() * 1.0645 * width_kms * formal_solution(source, dtau)
