"""The numbers a report plots: one value per job and quantity, read from the archive.

A value is NaN when the model is not archived, or when its archived outputs lack what the
quantity needs (a species, a transition, or a transition deeper than the clump centre); the
reason is kept as a note, never guessed or filled in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..export.lines import CATALOGUE, erg_to_k_kms, parse_ratio
from ..results import (
    ArchiveReader,
    JobRecord,
    ModelOutputs,
    c_co_transition_av,
    cplus_c_transition_av,
    h_h2_transition_av,
)


@dataclass(frozen=True)
class Quantity:
    key: str  # stable id, e.g. "surface_tgas", "line:CII_158um"
    title: str  # figure title
    label: str  # colour-bar label with the unit (matplotlib mathtext)
    unit: str  # plain-text unit for tables
    log: bool  # logarithmic colour scale


@dataclass(frozen=True)
class StandardLine:
    key: str
    title: str
    species: str
    wavelength_um: float  # matched within 0.5 %: transition names differ between codes


# The lines PDR users look at first, when the onion output has them.
STANDARD_LINES: tuple[StandardLine, ...] = (
    StandardLine("CII_158um", "[CII] 158 µm", "C+", 157.741),
    StandardLine("CI_609um", "[CI] 609 µm", "C", 609.14),
    StandardLine("CI_370um", "[CI] 370 µm", "C", 370.42),
    StandardLine("CO_1-0", "CO J=1-0", "CO", 2600.76),
    StandardLine("CO_3-2", "CO J=3-2", "CO", 866.96),
    StandardLine("CO_6-5", "CO J=6-5", "CO", 433.56),
    StandardLine("OI_63um", "[OI] 63 µm", "O", 63.184),
    StandardLine("OI_145um", "[OI] 145 µm", "O", 145.525),
    StandardLine("13CO_1-0", "13CO J=1-0", "13CO", 2720.41),
)

INTENSITY_UNIT = "erg s⁻¹ cm⁻² sr⁻¹"
STANDIN_MARK = "stand-in, not KOSMA-tau"  # on every figure and page made from the stand-in's data
K_KMS_SPECIES = ("CO", "C", "13CO")  # radio astronomers quote these lines in K km/s

PROFILE_QUANTITIES: tuple[tuple[Quantity, Callable[[ModelOutputs], float | None], tuple[str, ...]], ...] = (
    (Quantity("surface_tgas", "Surface gas temperature", r"$T_\mathrm{gas}$ at the surface [K]", "K", True),
     lambda m: m.surface_tgas, ()),
    (Quantity("av_h_h2", "H/H₂ transition: 2x(H₂)/(x(H)+2x(H₂)) = 0.5",
              r"$A_V$ of the H/H$_2$ transition [mag]", "mag", False), h_h2_transition_av, ("H", "H2")),
    (Quantity("av_cplus_c", "C⁺/C transition: x(C⁺) = 0.5·(x(C⁺)+x(C)+x(CO))",
              r"$A_V$ of the C$^+$/C transition [mag]", "mag", False), cplus_c_transition_av, ("C+", "C", "CO")),
    (Quantity("av_c_co", "C/CO transition: x(CO) = 0.5·(x(C⁺)+x(C)+x(CO))",
              r"$A_V$ of the C/CO transition [mag]", "mag", False), c_co_transition_av, ("C+", "C", "CO")),
)


def line_quantity(line: StandardLine) -> Quantity:
    return Quantity(f"line:{line.key}", f"{line.title} integrated intensity (clump average)",
                    rf"$I$({line.title}) [erg s$^{{-1}}$ cm$^{{-2}}$ sr$^{{-1}}$]", INTENSITY_UNIT, True)


def kkms_quantity(line: StandardLine) -> Quantity:
    return Quantity(f"kkms:{line.key}", f"{line.title} integrated intensity in K km/s (clump average)",
                    rf"$W$({line.title}) [K km s$^{{-1}}$]", "K km/s", True)


def ratio_quantity(ratio: str) -> Quantity:
    return Quantity(f"ratio:{ratio}", f"Line ratio {ratio} (intensities in erg s⁻¹ cm⁻² sr⁻¹)",
                    f"{ratio}", "", True)


@dataclass
class GridData:
    grid: str
    jobs: list[JobRecord]
    standin: bool = False  # the stand-in made the data: every figure and the page say so
    quantities: list[Quantity] = field(default_factory=list)
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # quantity key → job name → value
    notes: list[str] = field(default_factory=list)  # grid-wide: missing species, unreadable models
    model_notes: dict[str, list[str]] = field(default_factory=dict)  # job name → notes
    why_missing: dict[str, dict[str, str]] = field(default_factory=dict)  # quantity → job → short reason

    def value(self, key: str, job: str) -> float:
        return self.values.get(key, {}).get(job, math.nan)

    def missing_reason(self, key: str, job: JobRecord) -> str:
        """A few words for a cell without a value: the job's state, or why its outputs have none."""
        if not job.archived:
            return job.state
        return self.why_missing.get(key, {}).get(job.name, "unreadable")


def facet_key(job: JobRecord) -> tuple[Any, ...]:
    """Models sharing the n–χ plane: same metallicity, mass and varied parameters."""
    return (job.metallicity, job.mass, tuple(sorted((k, str(v)) for k, v in job.varied.items())))


def facet_title(key: tuple[Any, ...]) -> str:
    metallicity, mass, varied = key
    parts = [f"Z = {metallicity:g} Z☉", f"M = {mass:g} M☉", *(f"{name} = {value}" for name, value in varied)]
    return ", ".join(parts)


def _value(getter: Callable[[ModelOutputs], float | None], outputs: ModelOutputs, needs: tuple[str, ...],
           title: str, notes: list[str]) -> tuple[float, str]:
    """(value, "") or (NaN, a short reason); the long reason goes to ``notes``."""
    absent = [s for s in needs if s not in outputs.abundances]
    if absent:
        notes.append(f"{title}: no abundance of {', '.join(absent)} in the structure file")
        return math.nan, f"no {', '.join(absent)}"
    value = getter(outputs)
    if value is None:
        notes.append(f"{title}: not reached within the clump (A_V at the centre {outputs.av[-1]:.3g})")
        return math.nan, "beyond centre"
    return float(value), ""


def collect(reader: ArchiveReader) -> GridData:
    """Read every archived model of the grid once and keep the numbers to plot."""
    from ..export.cube import provenance_summary

    provenance = provenance_summary(reader)
    standin = bool(provenance["standin_models"]) or (reader.config.kosma_tau.standin
                                                     and not provenance["kosma_tau_models"])
    data = GridData(reader.grid, reader.jobs(), standin)
    outputs: dict[str, ModelOutputs] = {}
    # A transient StorageError (archive unreachable after retries) propagates: stop rather than blank every model.
    for job, read in reader.many_model_outputs(job for job in data.jobs if job.archived):
        if isinstance(read, Exception):
            data.notes.append(f"{job.name}: archived but unreadable, shown blank: {read}")
            continue
        outputs[job.name] = read
        data.model_notes[job.name] = list(read.notes)
    for quantity, getter, needs in PROFILE_QUANTITIES:
        data.quantities.append(quantity)
        column = data.values.setdefault(quantity.key, {})
        for name, model in outputs.items():
            column[name], why = _value(getter, model, needs, quantity.title.split(":")[0], data.model_notes[name])
            if why:
                data.why_missing.setdefault(quantity.key, {})[name] = why
    _collect_lines(data, outputs, reader.config.kosma_tau.onion_species)
    _collect_ratios(data, outputs, reader.config.results.report_ratios)
    return data


def _collect_ratios(data: GridData, outputs: Mapping[str, ModelOutputs], ratios: Sequence[str]) -> None:
    """The configured ratio maps (pdrtpy line ids), from each model's archived line intensities."""
    known = {line.id: line for line in CATALOGUE}
    for ratio in ratios:
        numerator, denominator = parse_ratio(ratio)
        unknown = [i for i in (numerator, denominator) if i not in known]
        if unknown:
            data.notes.append(f"ratio {ratio}: {', '.join(unknown)} is not a line pdrflow knows; no map")
            continue
        top, bottom = known[numerator], known[denominator]
        found = {}
        for name, model in outputs.items():
            a = model.line_intensity(top.species, top.wavelength_um)
            b = model.line_intensity(bottom.species, bottom.wavelength_um)
            found[name] = a / b if a is not None and b is not None and b > 0 else None
        if all(v is None for v in found.values()):
            if outputs:
                data.notes.append(f"ratio {ratio}: no archived model has both lines; no map")
            continue
        quantity = ratio_quantity(ratio)
        data.quantities.append(quantity)
        column = data.values.setdefault(quantity.key, {})
        for name, value in found.items():
            column[name] = math.nan if value is None else value
            if value is None:
                data.why_missing.setdefault(quantity.key, {})[name] = "no line table"


def _collect_lines(data: GridData, outputs: Mapping[str, ModelOutputs], onion_species: Sequence[str]) -> None:
    for line in STANDARD_LINES:
        with_species = [m for m in outputs.values() if line.species in m.lines]
        if not with_species:
            if outputs:
                why = ("no archived model has its line table" if line.species in onion_species
                       else "not among the grid's onion species")
                data.notes.append(f"{line.title}: species {line.species} {why}; no map")
            continue
        found = {m.name: m.line_intensity(line.species, line.wavelength_um) for m in outputs.values()}
        if all(v is None for v in found.values()):
            data.notes.append(f"{line.title}: the {line.species} line tables have no transition at "
                              f"{line.wavelength_um:g} µm; no map")
            continue
        quantity = line_quantity(line)
        data.quantities.append(quantity)
        column = data.values.setdefault(quantity.key, {})
        for name, value in found.items():
            column[name] = math.nan if value is None else value
            if value is None:
                data.model_notes[name].append(f"{line.title}: not in this model's archived line tables")
                data.why_missing.setdefault(quantity.key, {})[name] = "no line table"
        if line.species in K_KMS_SPECIES:
            kkms = kkms_quantity(line)
            data.quantities.append(kkms)
            data.values[kkms.key] = {name: erg_to_k_kms(value, line.wavelength_um) for name, value in column.items()}
            if quantity.key in data.why_missing:
                data.why_missing[kkms.key] = dict(data.why_missing[quantity.key])
