"""What reading a grid's archive gives: a model's outputs, its line tables, and the errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..ledger.queries import JobRecord

CARBON_CARRIERS = ("C+", "C", "CO")  # the gas-phase carbon budget for the C+/C/CO transitions


class ResultsError(Exception):
    """The archive or ledger cannot be read (no ledger, unknown grid or job, unreadable file)."""


class ModelNotArchived(ResultsError):
    """The job has no archived outputs (pending, running, failed, ...)."""


@dataclass(frozen=True)
class ArchivedFileRecord:
    path: str  # archive-relative
    size: int
    sha256: str


@dataclass(frozen=True)
class LineTable:
    """One species' line table from onion (``linebt_<S>.out``)."""

    species: str
    transitions: tuple[str, ...]
    wavelength_um: np.ndarray
    intensity: np.ndarray  # integrated intensity, clump average [erg s^-1 cm^-2 sr^-1]
    peak_tb: np.ndarray  # line-centre brightness temperature, clump average [K]

    def find(self, wavelength_um: float, rtol: float = 0.005) -> int | None:
        """Index of the transition at ``wavelength_um`` (names differ between codes; wavelengths do not)."""
        if not len(self.wavelength_um):
            return None
        index = int(np.argmin(np.abs(self.wavelength_um - wavelength_um)))
        return index if abs(self.wavelength_um[index] - wavelength_um) <= rtol * wavelength_um else None


@dataclass(frozen=True)
class ModelOutputs:
    """One archived model: depth profiles (surface first), abundances and line tables."""

    job: JobRecord
    depth_cm: np.ndarray
    av: np.ndarray  # visual extinction from the surface [mag]
    tgas: np.ndarray  # [K]
    tdust: np.ndarray  # [K]; NaN where the file has none
    nh: np.ndarray  # total H nuclei density [cm^-3]; NaN where the file has none
    abundances: Mapping[str, np.ndarray]  # relative to H nuclei
    lines: Mapping[str, LineTable]  # by species
    notes: tuple[str, ...] = ()  # what was missing or odd
    column_densities: Mapping[str, float] = field(default_factory=dict)  # [cm^-2], from pdrchem when archived

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def surface_tgas(self) -> float:
        return float(self.tgas[0])

    def line_intensity(self, species: str, wavelength_um: float) -> float | None:
        """Integrated intensity [erg s^-1 cm^-2 sr^-1] of a transition, None if not in the archive."""
        table = self.lines.get(species)
        index = None if table is None else table.find(wavelength_um)
        return None if table is None or index is None else float(table.intensity[index])
