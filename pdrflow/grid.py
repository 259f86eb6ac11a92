"""Expand the grid section into models: values, archive names and model hashes.

Two notations, told apart by the key, never guessed:
- physical values (``density: [1e3]``): numbers, or strings that are plain decimal numbers;
- the predecessor's tenth-dex integers (``density_tenthdex: ["30"]`` = 10^3.0 cm^-3) and
  metallicity in percent (``metallicity_percent: ["100"]`` = 1.00 Z_sun).
Nothing is evaluated: a value is parsed by a regular expression or refused.

Archive names follow the contract, ``<metal>_<dens>_<mass>_<chi>_00`` in tenth-dex integers
(``100_30_-10_10_00``), a zero component written ``00`` as existing archives have it. A value
in the predecessor's notation keeps the string as written (``"30"``, ``"30.0"``). A physical value
that is not a whole number of tenth-dex gets a disambiguated component with four decimals
(3e3 cm^-3 → ``34.7712``) instead of a rounded, misleading one, unless ``grid.naming`` is
``predecessor`` (its rounded names, to continue an old grid); a parameter varied besides the four
axes is appended as ``_<name><value>``. Two models of one grid that would still share a name are
refused.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import Config, GridConfig
from .errors import ConfigError, shown
from .kosma.inputs import fortran_number
from .kosma.parameters import (
    AXIS_PARAMETERS,
    DEFAULT_NETWORK_SPECIES,
    ELEMENT_DEFAULTS,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    ParamValue,
    clump_radius_cm,
)

HASH_SCHEMA = 2  # 2: the input templates are part of a model's identity
FORTRAN_INT_MAX = 2**31 - 1  # KOSMA-tau reads integers into default (32-bit) Fortran INTEGERs
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_TENTHDEX = re.compile(r"^[+-]?\d{1,9}(\.\d{1,9})?$")  # "30", "-10", "30.0": the predecessor's axis strings
# axis → (physical key, predecessor key, predecessor scale)
AXES: dict[str, tuple[str, str]] = {
    "metallicity": ("metallicity", "metallicity_percent"),
    "density": ("density", "density_tenthdex"),
    "mass": ("mass", "mass_tenthdex"),
    "fuv": ("fuv", "fuv_tenthdex"),
}


@dataclass(frozen=True)
class Identity:
    """What else a model's results depend on: the code, the rate file and the input templates (sha256)."""

    pdr_sha256: str
    onion_sha256: str
    chem_rates_sha256: str
    inputs_sha256: str  # the PDRNEW.INP and pdr_config.json templates and the grid-mode flag


@dataclass(frozen=True)
class GridCommon:
    """What all models of one grid share; one object referenced by every ModelSpec."""

    parameters: Mapping[str, ParamValue]  # defaults and fixed parameters
    onion_species: tuple[str, ...]
    network_species: tuple[str, ...]
    elements: Mapping[str, float]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid, everything its run needs and nothing about where it runs."""

    name: str
    model_hash: str
    axes: Mapping[str, float]  # metallicity, density, mass, fuv in physical units
    own: Mapping[str, ParamValue]  # this model's parameters: from the axes, and the varied ones
    common: GridCommon
    varied: Mapping[str, ParamValue] = field(default_factory=dict)  # non-axis parameters varied

    @property
    def parameters(self) -> dict[str, ParamValue]:
        """Every KOSMA-tau parameter, resolved."""
        return {**self.common.parameters, **self.own}

    @property
    def onion_species(self) -> tuple[str, ...]:
        return self.common.onion_species

    @property
    def network_species(self) -> tuple[str, ...]:
        return self.common.network_species

    @property
    def elements(self) -> Mapping[str, float]:
        return self.common.elements

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_hash": self.model_hash,
            "axes": dict(self.axes),
            "parameters": self.parameters,
            "onion_species": list(self.onion_species),
            "network_species": list(self.network_species),
            "elements": dict(self.elements),
            "varied": dict(self.varied),
        }


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return value


def parse_physical(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    try:
        if isinstance(value, int | float):
            return _finite(float(value), where)
        if isinstance(value, str) and _DECIMAL.match(value.strip()):
            return _finite(float(value.strip()), where)
    except OverflowError:  # float(10**400): an int too large for a float
        raise ConfigError(f"{where}: {shown(value)} is not a finite number") from None
    raise ConfigError(f"{where}: expected a number, got {shown(value)}")


def parse_tenthdex(value: object, where: str) -> tuple[float, str]:
    """A value in the predecessor's notation: (the number, the string as written for the name)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a string like \"30\", got {shown(value)}")
    if isinstance(value, int):
        return float(value), str(value)
    # At most 9 digits each side: 10^(10^8) is out of range anyway, and huge int() parses are refused.
    if isinstance(value, str) and _TENTHDEX.match(value.strip()):
        return float(value.strip()), value.strip()
    raise ConfigError(
        f"{where}: expected tenths of a dex (like \"30\" for 10^3.0, or \"30.0\"), got {shown(value)}; "
        "use the physical-value key instead for numbers like 1e3"
    )


def _axis_values(grid: GridConfig, axis: str) -> list[tuple[float, str]]:
    """(physical value, name component) of each value of one axis, in the config's order."""
    physical_key, legacy_key = AXES[axis]
    physical = getattr(grid, physical_key)
    legacy = getattr(grid, legacy_key)
    if physical is not None and legacy is not None:
        raise ConfigError(f"grid.{physical_key}: give either {physical_key} or {legacy_key}, not both")
    if physical is None and legacy is None:
        raise ConfigError(f"grid.{physical_key}: required (or grid.{legacy_key} in the predecessor's notation)")
    key, raw = (physical_key, physical) if physical is not None else (legacy_key, legacy)
    if not raw:
        raise ConfigError(f"grid.{key}: needs at least one value")
    values: list[tuple[float, str]] = []
    for i, item in enumerate(raw):
        where = f"grid.{key}[{i}]"
        try:
            if key == physical_key:
                value = parse_physical(item, where)
                component = name_component(axis, value, grid.naming) if value > 0.0 else ""
            else:
                notation, component = parse_tenthdex(item, where)
                value = notation / 100.0 if axis == "metallicity" else 10.0 ** (notation / 10.0)
                component = "00" if component in ("0", "-0", "+0") else component
        except OverflowError:  # 10.0 ** 9999.9, or a percentage too large for a float
            raise ConfigError(f"{where}: {shown(item)} is out of range") from None
        if value <= 0.0:
            raise ConfigError(f"{where}: must be > 0, got {shown(item)}")
        values.append((value, component))
    if len({value for value, _ in values}) != len(values):
        raise ConfigError(f"grid.{key}: a value is listed twice")
    return values


def name_component(axis: str, value: float, naming: str = "pdrflow") -> str:
    """The archive-name component of one axis value (tenth-dex, or percent for metallicity).

    ``00`` for zero, as existing archives write it. Between tenth-dex steps: four decimals
    (``pdrflow``), or Python's rounding as the predecessor named it (``predecessor``)."""
    scaled = value * 100.0 if axis == "metallicity" else 10.0 * math.log10(value)
    nearest = round(scaled)
    if naming == "predecessor" or abs(scaled - nearest) <= 1e-6 * max(1.0, abs(scaled)):
        return str(int(nearest)) if nearest != 0 else "00"
    return f"{scaled:.4f}"


def _parameter_value(name: str, raw: object, where: str) -> ParamValue:
    kind = PARAMETERS_BY_NAME[name].kind
    if kind is str:
        # Written into PDRNEW.INP and used as a file name by KOSMA-tau: no paths, no spaces.
        if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,79}", raw):
            raise ConfigError(f"{where}: expected a file-name-like string, got {shown(raw)}")
        return raw
    if kind is int:
        number: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, float) and raw.is_integer():
            number = int(raw)
        elif isinstance(raw, str) and _INTEGER.match(raw.strip()) and len(raw.strip()) <= 12:
            number = int(raw.strip())
        if number is None:
            raise ConfigError(f"{where}: expected an integer, got {shown(raw)}")
        if abs(number) > FORTRAN_INT_MAX:
            raise ConfigError(f"{where}: {number} is out of range for a KOSMA-tau integer")
        return number
    return parse_physical(raw, where)


def _parameter_choices(grid: GridConfig) -> dict[str, list[ParamValue]]:
    choices: dict[str, list[ParamValue]] = {}
    for name, raw in grid.parameters.items():
        if name in AXIS_PARAMETERS:
            raise ConfigError(f"grid.parameters.{name}: set by the grid axes (density, fuv, metallicity, mass)")
        if name not in PARAMETERS_BY_NAME:
            close = difflib.get_close_matches(name, list(PARAMETERS_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"grid.parameters.{name}: unknown KOSMA-tau parameter{hint}")
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise ConfigError(f"grid.parameters.{name}: needs at least one value")
        values = [_parameter_value(name, item, f"grid.parameters.{name}") for item in items]
        if len(set(values)) != len(values):
            raise ConfigError(f"grid.parameters.{name}: a value is listed twice")
        choices[name] = values
    return choices


def _elements(grid: GridConfig) -> dict[str, float]:
    elements = dict(ELEMENT_DEFAULTS)
    for key, raw in grid.abundances.items():
        if key not in elements:
            raise ConfigError(f"grid.abundances.{key}: unknown element (known: {', '.join(elements)})")
        value = parse_physical(raw, f"grid.abundances.{key}")
        if value < 0.0:
            raise ConfigError(f"grid.abundances.{key}: must be >= 0")
        elements[key] = value
    return elements


def _hash_document(
    parameters: Mapping[str, Any], onion_species: Sequence[str], network_species: Sequence[str],
    elements: Mapping[str, float], identity: Identity,
) -> dict[str, Any]:
    return {
        "schema": HASH_SCHEMA,
        "parameters": dict(parameters),
        "onion_species": sorted(onion_species),
        "network_species": list(network_species),  # order matters to the chemistry code
        "elements": dict(elements),
        "pdr_sha256": identity.pdr_sha256,
        "onion_sha256": identity.onion_sha256,
        "chem_rates_sha256": identity.chem_rates_sha256,
        "inputs_sha256": identity.inputs_sha256,
    }


def _canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def model_hash(
    parameters: Mapping[str, ParamValue],
    onion_species: Sequence[str],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    identity: Identity,
) -> str:
    """sha256 over everything that determines a model's outputs, in canonical JSON."""
    document = _hash_document(parameters, onion_species, network_species, elements, identity)
    return hashlib.sha256(_canonical(document).encode()).hexdigest()


def _json_scalar(value: ParamValue) -> str:
    """json.dumps for one scalar, without building an encoder per call (hot for 100k models)."""
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value!r}")
        return repr(value)  # what json.dumps writes for a finite float
    if type(value) is int:
        return str(value)
    return json.dumps(value, allow_nan=False)


class _HashTemplate:
    """model_hash() for many models that differ in a few parameters, without redoing the rest.

    The canonical JSON is rendered once with a placeholder for each per-model parameter and
    split there; each model only serializes its own values. Same bytes, same hash, as
    model_hash() over the full parameter set (a test checks it).
    """

    def __init__(self, common: GridCommon, own_keys: Sequence[str], identity: Identity) -> None:
        self.keys = list(own_keys)
        slots = {key: f"\x00slot{i}\x00" for i, key in enumerate(self.keys)}
        document = _hash_document({**common.parameters, **slots}, common.onion_species, common.network_species,
                                  common.elements, identity)
        text = _canonical(document)
        self.keys.sort(key=lambda key: text.index(json.dumps(slots[key])))  # in order of appearance
        self.pieces: list[bytes] = []
        for key in self.keys:
            before, text = text.split(json.dumps(slots[key]), 1)
            self.pieces.append(before.encode())
        self.tail = text.encode()

    def __call__(self, own: Mapping[str, ParamValue]) -> str:
        digest = hashlib.sha256()
        for piece, key in zip(self.pieces, self.keys, strict=True):
            digest.update(piece)
            digest.update(_json_scalar(own[key]).encode())
        digest.update(self.tail)
        return digest.hexdigest()


def model_spec(
    name: str,
    axes: Mapping[str, float],
    parameters: Mapping[str, ParamValue],
    onion_species: Sequence[str],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    identity: Identity,
    varied: Mapping[str, ParamValue] | None = None,
) -> ModelSpec:
    """One model from a full parameter set (e.g. another tool's record of it), with the model hash
    the grid expansion gives the same model: taking a model over must not change its identity."""
    common = GridCommon(
        parameters=dict(parameters), onion_species=tuple(onion_species), network_species=tuple(network_species),
        elements=dict(elements),
    )
    digest = model_hash(parameters, onion_species, network_species, elements, identity)
    return ModelSpec(name=name, model_hash=digest, axes=dict(axes), own={}, common=common, varied=dict(varied or {}))


def varied_parameters(grid: GridConfig) -> set[str]:
    """KOSMA-tau parameters that differ between the grid's models (each template must write them)."""
    varied = {name for name, values in _parameter_choices(grid).items() if len(values) > 1}
    sizes = {axis: len(_axis_values(grid, axis)) for axis in AXES}
    for parameter, axes in (("xnsur", ("density",)), ("sint", ("fuv",)), ("zmetal", ("metallicity",)),
                            ("rtot", ("density", "mass"))):
        if any(sizes[axis] > 1 for axis in axes):
            varied.add(parameter)
    if varied & {"alpha", "rcore"}:
        varied.add("rtot")
    return varied


def count_models(grid: GridConfig) -> int:
    total = 1
    for axis in AXES:
        total *= len(_axis_values(grid, axis))
    for values in _parameter_choices(grid).values():
        total *= len(values)
    return total


def _check_size(axis_values: Mapping[str, Sequence[object]], choices: Mapping[str, Sequence[ParamValue]],
                limit: int) -> None:
    """Refuse a grid over run.max_models from the axis lengths alone, before any model exists."""
    sizes = [(f"grid.{axis}", len(values)) for axis, values in axis_values.items()]
    sizes += [(f"grid.parameters.{name}", len(values)) for name, values in choices.items() if len(values) > 1]
    total = math.prod(size for _, size in sizes)
    if total > limit:
        shape = " x ".join(f"{size} {key.removeprefix('grid.')}" for key, size in sizes if size > 1)
        raise ConfigError(f"grid: {total} models ({shape}) is more than run.max_models = {limit}; "
                          "raise run.max_models if you mean it")


def expand_grid(config: Config, identity: Identity) -> Iterator[ModelSpec]:
    """All models of the grid, in a stable order. Raises ConfigError on bad values."""
    grid = config.grid
    axis_values = {axis: _axis_values(grid, axis) for axis in AXES}
    choices = _parameter_choices(grid)
    _check_size(axis_values, choices, config.run.max_models)
    base = {p.name: p.default for p in PARAMETERS if p.default is not None}
    varied_names = [name for name, values in choices.items() if len(values) > 1]
    fixed = {name: values[0] for name, values in choices.items() if len(values) == 1}
    common = GridCommon(
        parameters={**base, **fixed},
        onion_species=tuple(config.kosma_tau.onion_species),
        network_species=tuple(config.kosma_tau.network_species or DEFAULT_NETWORK_SPECIES),
        elements=_elements(grid),
    )
    own_keys = [*AXIS_PARAMETERS, *varied_names]
    hash_of = _HashTemplate(common, own_keys, identity)
    components = {axis: dict(values) for axis, values in axis_values.items()}
    numbers = [[value for value, _ in values] for values in axis_values.values()]
    seen: dict[str, Mapping[str, float]] = {}
    for metal, density, mass, fuv in itertools.product(*numbers):
        for combo in itertools.product(*(choices[name] for name in varied_names)):
            varied = dict(zip(varied_names, combo, strict=True))
            alpha = float(varied.get("alpha", common.parameters["alpha"]))
            rcore = float(varied.get("rcore", common.parameters["rcore"]))
            if not 0.0 <= alpha < 3.0:
                raise ConfigError("grid.parameters.alpha: must be in [0, 3) for the clump density law")
            try:
                rtot = clump_radius_cm(density, mass, alpha, rcore)
            except (OverflowError, ZeroDivisionError):
                rtot = math.inf
            axes = {"metallicity": metal, "density": density, "mass": mass, "fuv": fuv}
            if not math.isfinite(rtot) or rtot <= 0.0:
                # e.g. density 1e-320: the clump radius overflows, and KOSMA-tau would read "inf"
                raise ConfigError(f"grid: the clump radius for density {density:g} and mass {mass:g} is not a finite "
                                  "positive number; check grid.density and grid.mass")
            own: dict[str, ParamValue] = {
                "xnsur": density, "sint": fuv, "zmetal": metal, "rtot": rtot, **varied,
            }
            name = "_".join(components[axis][axes[axis]] for axis in AXES) + "_00"
            name += "".join(f"_{key}{fortran_number(value)}" for key, value in varied.items())
            if name in seen:
                raise ConfigError(
                    f"grid: two models would share the archive name {name!r} ({seen[name]} and {axes}); "
                    "give values that differ by at least 1e-4 dex"
                    + (" (or grid.naming: pdrflow, names with four decimals)" if grid.naming == "predecessor" else "")
                )
            seen[name] = axes
            yield ModelSpec(name=name, model_hash=hash_of(own), axes=axes, own=own, common=common, varied=varied)
