"""Line identifiers as the PDR Toolbox (pdrtpy) names them, and the unit conversions of line intensities.

pdrtpy identifies a line by a short id (``CII_158``, ``CO_32``) and its model files by the id without
``_`` (``CII158.fits``, ``CII158_CI609.fits`` for the ratio ``CII_158/CI_609``). Archived line tables
name their transitions as the code does; a transition is matched to an id by species and wavelength
(within 0.5 %, as the report does), and one not in the catalogue gets an id made from its own name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

K_BOLTZMANN = 1.380649e-16  # erg/K
C_CM = 2.99792458e10  # cm/s
# One Draine field in erg s^-1 cm^-2 (6-13.6 eV): pdrtpy's own `draine_unit`, so that a fitted FUV field
# converted back to Draine units lands on the grid's values. Recorded in every exported file.
DRAINE_ERG_S_CM2 = 2.72e-3
WAVELENGTH_RTOL = 0.005


@dataclass(frozen=True)
class LineId:
    id: str  # pdrtpy identifier, e.g. "CII_158"
    species: str  # the onion species whose table holds it
    wavelength_um: float
    title: str  # FITS TITLE and pdrtpy's models.tab title

    @property
    def stem(self) -> str:
        """The FITS file name without extension, pdrtpy's convention: the id without underscores."""
        return file_stem(self.id)


def file_stem(identifier: str) -> str:
    return identifier.replace("_", "").replace("/", "_")


def _co(species: str, label: str, prefix: str, wavelengths: tuple[float, ...]) -> list[LineId]:
    return [LineId(f"{prefix}_{j}{j - 1}", species, wl, f"{label}(J={j}-{j - 1})")
            for j, wl in enumerate(wavelengths, start=1)]


CATALOGUE: tuple[LineId, ...] = (
    LineId("CII_158", "C+", 157.741, "[C II] 158 micron"),
    LineId("CI_609", "C", 609.14, "[C I] 609 micron"),
    LineId("CI_370", "C", 370.42, "[C I] 370 micron"),
    LineId("OI_63", "O", 63.184, "[O I] 63 micron"),
    LineId("OI_145", "O", 145.525, "[O I] 145 micron"),
    *_co("CO", "CO", "CO", (2600.76, 1300.40, 866.96, 650.25, 520.23, 433.56, 371.65, 325.23, 289.12, 260.24)),
    *_co("13CO", "13CO", "13CO", (2720.41, 1360.23, 906.85, 680.17, 544.16, 453.50, 388.74)),
)


def identify(species: str, transition: str, wavelength_um: float) -> LineId:
    """The pdrtpy id of an archived transition."""
    for line in CATALOGUE:
        if line.species == species and abs(line.wavelength_um - wavelength_um) <= WAVELENGTH_RTOL * line.wavelength_um:
            return line
    # Not a line pdrtpy ships models of: an id of the transition's own name ("HCO+_1-0" -> "HCO+_10").
    identifier = re.sub(r"[^A-Za-z0-9_+]", "", transition) or f"{species}_{wavelength_um:.0f}"
    return LineId(identifier, species, wavelength_um, f"{transition} {wavelength_um:.5g} micron")


def frequency_hz(wavelength_um: float) -> float:
    return C_CM / (wavelength_um * 1e-4)


def erg_to_k_kms(intensity: float, wavelength_um: float) -> float:
    """Integrated intensity [erg s^-1 cm^-2 sr^-1] in K km/s (Rayleigh-Jeans: I = 2 k nu^3/c^3 W)."""
    if not math.isfinite(intensity):
        return math.nan
    return intensity * C_CM ** 3 / (2.0 * K_BOLTZMANN * frequency_hz(wavelength_um) ** 3) / 1e5


def parse_ratio(ratio: str) -> tuple[str, str]:
    numerator, _, denominator = ratio.partition("/")
    if not numerator or not denominator or "/" in denominator:
        raise ValueError(f"{ratio!r} is not a line ratio like CII_158/CI_609")
    return numerator, denominator


def ratio_title(numerator: LineId | str, denominator: LineId | str) -> str:
    def title(line: LineId | str) -> str:
        return line.title if isinstance(line, LineId) else line

    return f"{title(numerator)}/{title(denominator)}"
