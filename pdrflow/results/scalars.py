"""Every scalar of an archived model: surface temperatures, transition depths, column densities, lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..export.lines import erg_to_k_kms, identify
from .outputs import (
    CARBON_CARRIERS,
    ModelOutputs,
)

# ---- transitions --------------------------------------------------------------------------


def crossing_av(av: np.ndarray, fraction: np.ndarray, rising: bool) -> float | None:
    """A_V where ``fraction`` first crosses 0.5 going inwards (linear between depth points).

    0.0 if the fraction is already past 0.5 at the surface; None if it never gets there
    (the transition lies deeper than the clump centre)."""
    past = fraction >= 0.5 if rising else fraction <= 0.5
    hits = np.flatnonzero(past)
    if not len(hits):
        return None
    i = int(hits[0])
    if i == 0:
        return float(av[0])
    f0, f1 = float(fraction[i - 1]), float(fraction[i])
    weight = (0.5 - f0) / (f1 - f0) if f1 != f0 else 0.0
    return float(av[i - 1] + weight * (av[i] - av[i - 1]))


def h_h2_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where half of the H nuclei are in H2: 2 x(H2) / (x(H) + 2 x(H2)) = 0.5."""
    h, h2 = outputs.abundances["H"], outputs.abundances["H2"]
    total = h + 2.0 * h2
    return crossing_av(outputs.av, np.divide(2.0 * h2, total, out=np.zeros_like(total), where=total > 0), True)


def _carbon_fraction(outputs: ModelOutputs, species: str) -> np.ndarray:
    total = sum(outputs.abundances[s] for s in CARBON_CARRIERS)
    assert isinstance(total, np.ndarray)
    return np.divide(outputs.abundances[species], total, out=np.zeros_like(total), where=total > 0)


def cplus_c_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where C+ falls to half of the gas-phase carbon (C+ + C + CO)."""
    return crossing_av(outputs.av, _carbon_fraction(outputs, "C+"), False)


def c_co_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where CO rises to half of the gas-phase carbon (C+ + C + CO)."""
    return crossing_av(outputs.av, _carbon_fraction(outputs, "CO"), True)


# ---- every scalar of a model ------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarInfo:
    units: str
    long_name: str
    species: str | None = None  # lines: the onion species
    wavelength_um: float | None = None  # lines
    line: str | None = None  # lines: the pdrtpy id


def _transition_av(outputs: ModelOutputs, getter: Any, needs: tuple[str, ...]) -> float:
    if any(s not in outputs.abundances for s in needs):
        return float("nan")
    value = getter(outputs)
    return float("nan") if value is None else float(value)


def model_scalars(outputs: ModelOutputs) -> dict[str, tuple[float, ScalarInfo]]:
    """Every scalar the archived outputs give, by a stable key: NaN where a quantity is not reached
    (a transition beyond the clump centre) or its species is not in the file."""
    result: dict[str, tuple[float, ScalarInfo]] = {
        "surface_tgas": (outputs.surface_tgas, ScalarInfo("K", "gas temperature at the clump surface")),
        "surface_tdust": (float(outputs.tdust[0]), ScalarInfo("K", "dust temperature at the clump surface")),
        "centre_av": (float(outputs.av[-1]), ScalarInfo("mag", "visual extinction from the surface to the centre")),
        "av_h_h2": (_transition_av(outputs, h_h2_transition_av, ("H", "H2")),
                    ScalarInfo("mag", "A_V of the H/H2 transition, 2x(H2)/(x(H)+2x(H2)) = 0.5")),
        "av_cplus_c": (_transition_av(outputs, cplus_c_transition_av, CARBON_CARRIERS),
                       ScalarInfo("mag", "A_V of the C+/C transition, x(C+) = half the gas-phase carbon")),
        "av_c_co": (_transition_av(outputs, c_co_transition_av, CARBON_CARRIERS),
                    ScalarInfo("mag", "A_V of the C/CO transition, x(CO) = half the gas-phase carbon")),
    }
    for species, column in sorted(outputs.column_densities.items()):
        result[f"N_{species}"] = (column, ScalarInfo("cm-2", f"column density of {species}, surface to centre",
                                                      species))
    for species, table in sorted(outputs.lines.items()):
        for i, transition in enumerate(table.transitions):
            wavelength = float(table.wavelength_um[i])
            line = identify(species, transition, wavelength)
            if f"I_{line.id}" in result:
                continue  # two transitions at one wavelength: the first one counts
            intensity, tb = float(table.intensity[i]), float(table.peak_tb[i])
            about = f"{line.title} ({species} {transition})"
            result[f"I_{line.id}"] = (intensity, ScalarInfo("erg s-1 cm-2 sr-1", f"{about} integrated intensity, "
                                                            "clump average", species, wavelength, line.id))
            result[f"W_{line.id}"] = (erg_to_k_kms(intensity, wavelength),
                                      ScalarInfo("K km s-1", f"{about} integrated intensity in K km/s "
                                                 "(Rayleigh-Jeans)", species, wavelength, line.id))
            result[f"Tpeak_{line.id}"] = (tb, ScalarInfo("K", f"{about} line-centre brightness temperature, "
                                                         "clump average", species, wavelength, line.id))
    return result
