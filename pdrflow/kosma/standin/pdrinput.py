"""Read and cross-check the stand-in's PDR inputs: ``PDRNEW.INP`` and ``pdr_config.json``. NOT KOSMA-tau.

``PDRNEW.INP`` is read the way the Fortran code reads it: one list-directed READ per value line at a
fixed line number (``PDRNEW_READS``, this module's own copy of the READ statements, deliberately not
shared with pdrflow's renderer), description lines skipped unread, then cards from ``CARDS_FROM`` on.
Reads are type-strict: an INTEGER read of ``1.5`` fails, and so does a line with too few or too many
values. A line shifted by one therefore breaks the stand-in where it would break KOSMA-tau.

``pdr_config.json`` is strict JSON read by its key tree (``CONFIG_KEYS``). Every value both files
hold must agree (relative tolerance 1e-9): they are rendered from the same parameters, so a
disagreement is a renderer bug, and the stand-in refuses it (exit 3) rather than picking one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .physics import Model

Kind = Literal["INTEGER", "REAL", "CHARACTER"]
Value = int | float | str
RATE_FILE: Final = "pdrinpdata/chem_rates.dat"  # fixed: the orchestrator links the chosen rate file here


def _reads(kind: Kind, line: int, *names: str) -> tuple[int, Kind, tuple[str, ...]]:
    return line, kind, names


# The READ statements of Part I and Part II: (line number, type, variables read from that line).
# Every line not listed up to MODEL_GRID_LINE is a description or header, skipped unread.
# Variables starting with "_" are read (so their line must hold valid values) but not used.
PDRNEW_READS: Final[tuple[tuple[int, Kind, tuple[str, ...]], ...]] = (
    _reads("REAL", 7, "xnsur"),
    _reads("REAL", 9, "alpha"),
    _reads("REAL", 11, "rcore"),
    _reads("REAL", 13, "sigd"),
    _reads("REAL", 15, "rtot"),
    _reads("REAL", 17, "sint"),
    _reads("REAL", 19, "cosray"),
    _reads("REAL", 21, "beta"),
    _reads("REAL", 23, "zmetal"),
    _reads("REAL", 25, "_abund_he", "_abund_o", "_abund_c", "_abund_si", "_abund_c13"),  # overridden by cards
    _reads("REAL", 27, "preshh2", "preshco"),
    _reads("INTEGER", 29, "ifuvmeth"),
    _reads("INTEGER", 30, "idustmet"),
    _reads("INTEGER", 32, "ifuvtype"),
    _reads("REAL", 33, "fuvtemp"),
    _reads("CHARACTER", 34, "fuvstring"),
    _reads("INTEGER", 36, "inewgam"),
    _reads("INTEGER", 38, "iscatter"),
    _reads("INTEGER", 40, "ihtclgas"),
    _reads("REAL", 41, "tgasc"),
    _reads("INTEGER", 43, "ihtcldust"),
    _reads("REAL", 44, "tdustc"),
    _reads("INTEGER", 46, "ipehmeth"),
    _reads("INTEGER", 47, "indxpeh"),
    _reads("INTEGER", 49, "ihtclpah"),
    _reads("INTEGER", 51, "indstr"),
    _reads("INTEGER", 52, "inds"),
    _reads("INTEGER", 53, "indx"),
    _reads("REAL", 55, *(f"d2gratio{i}" for i in range(1, 11))),
    _reads("INTEGER", 57, "ih2meth"),
    _reads("INTEGER", 58, "ih2onpah"),
    _reads("REAL", 59, "h2formc"),
    _reads("INTEGER", 61, "ih2shld"),
    _reads("INTEGER", 63, "h2_structure"),
    _reads("INTEGER", 65, "h2_h_coll_rates"),
    _reads("INTEGER", 67, "h2_h_reactive_colls"),
    _reads("INTEGER", 69, "h2_use_gbar"),
    _reads("INTEGER", 71, "h2_quad_a"),
    _reads("INTEGER", 73, "ifh2des"),
    _reads("INTEGER", 75, "ifcrdes"),
    _reads("INTEGER", 77, "ifphdes"),
    _reads("INTEGER", 79, "ifthdes"),
    _reads("REAL", 81, "bindsites"),
    _reads("INTEGER", 83, "ifchemheat"),
    _reads("INTEGER", 85, "ifheat_alfven"),
    _reads("REAL", 86, "alfven_velocity"),
    _reads("REAL", 87, "alfven_column"),
    # Part II
    _reads("REAL", 92, "temp_start"),
    _reads("INTEGER", 94, "itmeth"),
    _reads("INTEGER", 96, "ichemeth"),
    _reads("INTEGER", 98, "inewtonstep"),
    _reads("REAL", 100, "omega_neg"),
    _reads("REAL", 101, "omega_pos"),
    _reads("REAL", 102, "lambda_newt"),
    _reads("INTEGER", 104, "use_conservation"),
    _reads("INTEGER", 106, "rescaleQF"),
    _reads("INTEGER", 108, "precondLR"),
    _reads("INTEGER", 110, "resortQF"),
    _reads("INTEGER", 112, "nconv_time"),
    _reads("INTEGER", 114, "time_dependent"),
    _reads("REAL", 116, "first_time_step_yrs"),
    _reads("REAL", 118, "max_time_yrs"),
    _reads("INTEGER", 120, "num_time_steps"),
    _reads("INTEGER", 122, "use_dlsodes"),
    _reads("INTEGER", 124, "use_dlsoda"),
    _reads("INTEGER", 126, "use_dvodpk"),
    _reads("REAL", 128, "rtol_chem"),
    _reads("REAL", 130, "atol_chem"),
    _reads("REAL", 132, "Xhtry"),
    _reads("REAL", 134, "rtol_iter"),
    _reads("INTEGER", 136, "Niter"),
    _reads("REAL", 138, "step1"),  # REAL in the code: the golden files write 100.000000
    _reads("REAL", 140, "step2"),
    _reads("INTEGER", 142, "ihdfout"),
    _reads("INTEGER", 144, "dbglvl"),
)
MODEL_GRID_LINE: Final = 148  # blank, or "*MODEL GRID <text>" to ask for the grid mode
CARDS_FROM: Final = 149  # from here on: "*" comment lines and cards

# (Model element key, PDRNEW.INP card or None, pdr_config.json key under element_abundances)
ELEMENTS: Final[tuple[tuple[str, str | None, str], ...]] = (
    ("He", "HELIUM", "he"), ("C", "CARBON", "c"), ("13C", "13CARBON", "c13"), ("N", "NITROGEN", "n"),
    ("O", "OXYGEN", "o"), ("18O", "18OXYGEN", "o18"), ("F", "FLUORINE", "f"), ("Ne", None, "ne"),
    ("Na", "SODIUM", "na"), ("Mg", "MAGNESIUM", "mg"), ("Al", None, "al"), ("Si", "SILICON", "si"),
    ("P", "PHOSPHORUS", "p"), ("S", "SULFUR", "s"), ("Cl", "CHLORINE", "cl"), ("K", None, "k"),
    ("Ar", None, "ar"), ("Ca", None, "ca"), ("Fe", "IRON", "fe"),
)
_ELEMENT_CARDS: Final = {card: key for key, card, _ in ELEMENTS if card is not None}
_REQUIRED_CARDS: Final = ("CARBON", "13CARBON", "OXYGEN")  # the stand-in's chemistry scales these

# pdr_config.json: path in the key tree -> parameter (its type is the one of its PDRNEW.INP READ).
CONFIG_KEYS: Final[dict[str, str]] = {
    "physical_params/surface_density": "xnsur",
    "physical_params/density_law_exponent": "alpha",
    "physical_params/core_radius": "rcore",
    "physical_params/dust_cross_section": "sigd",
    "physical_params/cloud_radius": "rtot",
    "physical_params/radiation_field_strength": "sint",
    "physical_params/cosmic_ray_rate": "cosray",
    "physical_params/line_width": "beta",
    "physical_params/metallicity": "zmetal",
    "preshielding/h2": "preshh2",
    "preshielding/co": "preshco",
    "radiative_transfer/fuv_method": "ifuvmeth",
    "radiative_transfer/dust_method": "idustmet",
    "fuv_field/type": "ifuvtype",
    "fuv_field/temperature": "fuvtemp",
    "fuv_field/file": "fuvstring",
    "rescale_umist_rates": "inewgam",
    "scattering_method": "iscatter",
    "temperature/calculate_gas": "ihtclgas",
    "temperature/fixed_gas_value": "tgasc",
    "temperature/calculate_dust": "ihtcldust",
    "temperature/fixed_dust_value": "tdustc",
    "heating/pe_method": "ipehmeth",
    "heating/pe_dust_index": "indxpeh",
    "heating/include_pah": "ihtclpah",
    "dust/composition": "indstr",
    "dust/components": "inds",
    "dust/index": "indx",
    "h2_formation/method": "ih2meth",
    "h2_formation/on_pah": "ih2onpah",
    "h2_formation/fixed_rate": "h2formc",
    "h2/shielding_method": "ih2shld",
    "h2/level_treatment": "h2_structure",
    "h2/h_collision_rates": "h2_h_coll_rates",
    "h2/use_reactive_collisions": "h2_h_reactive_colls",
    "h2/use_gbar_approximation": "h2_use_gbar",
    "h2/quadrupole_transition_method": "h2_quad_a",
    "surface_chemistry/h2_formation_desorption": "ifh2des",
    "surface_chemistry/cr_desorption": "ifcrdes",
    "surface_chemistry/photo_desorption": "ifphdes",
    "surface_chemistry/thermal_desorption": "ifthdes",
    "surface_chemistry/binding_sites": "bindsites",
    "chemical_heating": "ifchemheat",
    "alfven_heating/include": "ifheat_alfven",
    "alfven_heating/velocity": "alfven_velocity",
    "alfven_heating/column": "alfven_column",
    "numerical_params/initial_temperature": "temp_start",
    "numerical_params/temperature_solution_method": "itmeth",
    "numerical_params/chemical_network_method": "ichemeth",
    "numerical_params/newton_stepping_method": "inewtonstep",
    "numerical_params/newton_omega_neg": "omega_neg",
    "numerical_params/newton_omega_pos": "omega_pos",
    "numerical_params/newton_lambda": "lambda_newt",
    "numerical_params/use_conservation_equations": "use_conservation",
    "numerical_params/rescale_qf": "rescaleQF",
    "numerical_params/precond_lr": "precondLR",
    "numerical_params/resort_qf": "resortQF",
    "numerical_params/use_time_dependent_if_no_convergence": "nconv_time",
    "numerical_params/use_time_dependent_instead_of_steady_state": "time_dependent",
    "numerical_params/initial_time_step": "first_time_step_yrs",
    "numerical_params/max_time": "max_time_yrs",
    "numerical_params/num_time_steps": "num_time_steps",
    "numerical_params/use_dlsodes": "use_dlsodes",
    "numerical_params/use_dlsoda": "use_dlsoda",
    "numerical_params/use_dvodpk": "use_dvodpk",
    "numerical_params/ode_relative_tolerance": "rtol_chem",
    "numerical_params/ode_absolute_tolerance": "atol_chem",
    "numerical_params/first_step_size": "Xhtry",
    "numerical_params/iteration_convergence_tolerance": "rtol_iter",
    "numerical_params/max_iterations": "Niter",
    "numerical_params/step_size_co_dissociated": "step1",
    "numerical_params/step_size_co_not_dissociated": "step2",
    "numerical_params/output_style": "ihdfout",
    "numerical_params/debug_level": "dbglvl",
}
_D2G_PATH: Final = "dust/dust_to_gas_ratio"  # list of d2gratio1..10
_CHEMCHK_PATHS: Final = ("numerical_params/chemchk_all", "numerical_params/chemchk_end")
_CHEMCHK_LENGTH: Final = "numerical_params/chemchk_length"
_TEXT_PATHS: Final = ("config_comment", "output_file", "element_abundances/reference")  # free text, unused
_CONFIG_LEAVES: Final = frozenset(
    (*CONFIG_KEYS, _D2G_PATH, *_CHEMCHK_PATHS, _CHEMCHK_LENGTH, *_TEXT_PATHS, "species",
     *(f"element_abundances/{key}" for _, _, key in ELEMENTS))
)

_KIND: Final = {name: kind for _, kind, names in PDRNEW_READS for name in names}
_LINE: Final = {name: line for line, _, names in PDRNEW_READS for name in names}
_PATH: Final = {**{name: path for path, name in CONFIG_KEYS.items()},
                **{f"d2gratio{i}": f"{_D2G_PATH}[{i - 1}]" for i in range(1, 11)}}


class InputError(Exception):
    """An input file is missing or malformed (exit 2)."""


class InconsistentInputs(Exception):
    """PDRNEW.INP and pdr_config.json disagree (exit 3)."""


@dataclass(frozen=True)
class Inputs:
    """What one of the two input files holds, keyed alike so that the two can be compared."""

    values: dict[str, Value]  # parameter -> value (the dummy abundances excluded)
    species: tuple[str, ...]
    elements: dict[str, float]  # Model element key -> abundance relative to H
    chemcheck: dict[str, int]  # "END"/"ALL" -> number of reactions printed
    model_grid: str | None = None  # PDRNEW.INP only: the *MODEL GRID text, None when blank


# Fortran list-directed numbers. A real may lack the dot or use d/D as exponent letter; Fortran
# also takes a signed exponent without a letter (1.0+3). Anything else (inf, nan, 1_0) is refused.
_INTEGER = re.compile(r"[+-]?\d+")
_REAL = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:[eEdD]([+-]?\d+)|([+-]\d+))?")
_REPEAT = re.compile(r"(\d+)\*(.*)")  # r*c: the value c, r times


def fortran_integer(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise InputError(f"{text!r} is not an INTEGER")
    return int(text)


def fortran_real(text: str) -> float:
    match = _REAL.fullmatch(text)
    if not match:
        raise InputError(f"{text!r} is not a REAL")
    mantissa, exponent, bare_exponent = match.groups()
    value = float(f"{mantissa}e{exponent or bare_exponent or 0}")
    if not math.isfinite(value):
        raise InputError(f"{text!r} overflows a REAL")
    return value


def _items(text: str) -> list[str]:
    """The values of one list-directed record: separated by a comma and/or blanks; ``r*c`` repeats."""
    stripped = text.strip()
    if not stripped:
        return []
    items: list[str] = []
    for item in re.split(r"\s*,\s*|\s+", stripped):
        repeat = _REPEAT.fullmatch(item)
        if not item or (repeat and not repeat.group(2)):
            raise InputError("null value (empty field); the stand-in needs every value given")
        if repeat:
            items += [repeat.group(2)] * int(repeat.group(1))
        else:
            items.append(item)
    return items


def _character(text: str) -> str:
    """A list-directed CHARACTER value: quoted, or up to the first blank, comma or slash."""
    stripped = text.strip()
    if stripped[:1] in ("'", '"'):
        quote = stripped[0]
        match = re.fullmatch(rf"{quote}((?:[^{quote}]|{quote}{quote})*){quote}\s*", stripped)
        if not match:
            raise InputError(f"unterminated or trailing text after the quoted string {stripped!r}")
        return match.group(1).replace(quote * 2, quote)
    if not stripped or re.search(r"[\s,/]", stripped):
        raise InputError(f"expected one CHARACTER value, found {stripped!r}")
    return stripped


def read_line(number: int, kind: Kind, names: Sequence[str], text: str) -> list[Value]:
    """One list-directed READ of ``names`` from line ``number``."""
    where = f"PDRNEW.INP line {number} ({kind} READ of {', '.join(n.upper() for n in names)})"
    try:
        if kind == "CHARACTER":
            return [_character(text)]
        items = _items(text)
        if len(items) != len(names):
            raise InputError(f"expected {len(names)} value(s), found {len(items)}")
        convert = fortran_integer if kind == "INTEGER" else fortran_real
        return [convert(item) for item in items]
    except InputError as exc:
        raise InputError(f"{where}: {exc}; the line reads {text!r}") from None


def parse_pdrnew(text: str) -> Inputs:
    lines = text.splitlines()
    if len(lines) < MODEL_GRID_LINE:
        raise InputError(f"PDRNEW.INP has {len(lines)} lines; Part I and II and the MODEL GRID line take "
                         f"{MODEL_GRID_LINE}")
    values: dict[str, Value] = {}
    for number, kind, names in PDRNEW_READS:
        for name, value in zip(names, read_line(number, kind, names, lines[number - 1]), strict=True):
            if not name.startswith("_"):
                values[name] = value
    grid_line = lines[MODEL_GRID_LINE - 1]
    model_grid = None
    if grid_line.strip():
        if not grid_line.startswith("*MODEL GRID ") or not grid_line[12:].strip():
            raise InputError(f"PDRNEW.INP line {MODEL_GRID_LINE}: expected a blank line or '*MODEL GRID <name>', "
                             f"found {grid_line!r}")
        model_grid = grid_line[12:].strip()
    species, elements, chemcheck = _cards(lines)
    return Inputs(values, species, elements, chemcheck, model_grid)


def _cards(lines: Sequence[str]) -> tuple[tuple[str, ...], dict[str, float], dict[str, int]]:
    species: list[str] = []
    elements: dict[str, float] = {}
    chemcheck: dict[str, int] = {}
    for number, line in enumerate(lines[CARDS_FROM - 1:], start=CARDS_FROM):
        words = line.split()
        if not words or line.startswith("*"):
            continue
        where = f"PDRNEW.INP line {number}"
        card = words[0]
        if card == "SPECIES":
            if len(words) != 2:
                raise InputError(f"{where}: expected 'SPECIES <name>', found {line!r}")
            if words[1] in species:
                raise InputError(f"{where}: species {words[1]} is listed twice")
            species.append(words[1])
        elif card == "CHEMCHECK":
            if len(words) != 3 or words[1] not in ("END", "ALL"):
                raise InputError(f"{where}: expected 'CHEMCHECK END|ALL <n>', found {line!r}")
            chemcheck[words[1]] = int(read_line(number, "INTEGER", ("chemchk_length",), words[2])[0])
        elif card in _ELEMENT_CARDS:
            if len(words) != 2:
                raise InputError(f"{where}: expected '{card} <abundance>', found {line!r}")
            key = _ELEMENT_CARDS[card]
            if key in elements:
                raise InputError(f"{where}: element card {card} given twice")
            elements[key] = float(read_line(number, "REAL", (card,), words[1])[0])
        else:
            raise InputError(f"{where}: unknown card {card!r} (not SPECIES, CHEMCHECK or an element card)")
    missing = [card for card in _REQUIRED_CARDS if _ELEMENT_CARDS[card] not in elements]
    if missing:
        raise InputError(f"PDRNEW.INP lacks the element card(s) {', '.join(missing)}")
    if not species:
        raise InputError("PDRNEW.INP has no SPECIES cards")
    return tuple(species), elements, chemcheck


def _leaves(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            result.update(_leaves(value, f"{path}/"))
        else:
            result[path] = value
    return result


def _json_value(kind: Kind, value: Any, path: str) -> Value:
    # bool is an int subclass in Python; JSON true/false is never a KOSMA-tau number
    if kind == "INTEGER" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "REAL" and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if kind == "CHARACTER" and isinstance(value, str):
        return value
    expected = {"INTEGER": "an integer", "REAL": "a finite number", "CHARACTER": "a string"}[kind]
    raise InputError(f"pdr_config.json {path}: expected {expected}, got {value!r}")


def parse_config(config: Mapping[str, Any]) -> Inputs:
    """pdr_config.json, already decoded, read by its key tree: every key present, no unknown key."""
    leaves = _leaves(config)
    missing, unknown = sorted(_CONFIG_LEAVES - set(leaves)), sorted(set(leaves) - _CONFIG_LEAVES)
    if missing or unknown:
        raise InputError("pdr_config.json key tree: " + "; ".join(
            text for text in (f"missing {', '.join(missing)}" if missing else "",
                              f"unknown {', '.join(unknown)}" if unknown else "") if text))
    values = {name: _json_value(_KIND[name], leaves[path], path) for path, name in CONFIG_KEYS.items()}
    ratios = leaves[_D2G_PATH]
    if not isinstance(ratios, list) or len(ratios) != 10:
        raise InputError(f"pdr_config.json {_D2G_PATH}: expected a list of 10 numbers, got {ratios!r}")
    values.update({f"d2gratio{i}": _json_value("REAL", v, f"{_D2G_PATH}[{i - 1}]") for i, v in enumerate(ratios, 1)})
    for path in _TEXT_PATHS:
        _json_value("CHARACTER", leaves[path], path)
    species = leaves["species"]
    if not isinstance(species, list) or not species or not all(isinstance(s, str) and s for s in species):
        raise InputError("pdr_config.json species: expected a non-empty list of species names")
    elements = {key: float(_json_value("REAL", leaves[f"element_abundances/{name}"], f"element_abundances/{name}"))
                for key, _, name in ELEMENTS}
    flags = {path: leaves[path] for path in _CHEMCHK_PATHS}
    if not all(isinstance(flag, bool) for flag in flags.values()):
        raise InputError(f"pdr_config.json {' and '.join(_CHEMCHK_PATHS)}: expected true or false, got {flags}")
    length = int(_json_value("INTEGER", leaves[_CHEMCHK_LENGTH], _CHEMCHK_LENGTH))
    chemcheck = {mode: length for mode, path in (("ALL", _CHEMCHK_PATHS[0]), ("END", _CHEMCHK_PATHS[1]))
                 if flags[path]}
    return Inputs(values, tuple(species), elements, chemcheck)


def _differ(a: Value, b: Value, rel_tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return not (isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=rel_tol))
    return a != b


def check_consistent(pdrnew: Inputs, config: Inputs, rel_tol: float = 1e-9) -> None:
    """Every value both files hold must agree (reals within ``rel_tol``, integers and text exactly)."""
    for name, value in pdrnew.values.items():
        other = config.values[name]
        if _differ(value, other, rel_tol):
            raise InconsistentInputs(f"PDRNEW.INP line {_LINE[name]} {name.upper()}={value!r} but pdr_config.json "
                                     f"{_PATH[name]}={other!r}")
    for key, value in pdrnew.elements.items():
        if _differ(value, config.elements[key], rel_tol):
            raise InconsistentInputs(f"PDRNEW.INP element {key}={value!r} but pdr_config.json {key}="
                                     f"{config.elements[key]!r}")
    if pdrnew.species != config.species:
        first = next((i for i, pair in enumerate(zip(pdrnew.species, config.species, strict=False)) if pair[0] != pair[1]),
                     min(len(pdrnew.species), len(config.species)))
        raise InconsistentInputs(f"PDRNEW.INP SPECIES cards ({len(pdrnew.species)}) and pdr_config.json species "
                                 f"({len(config.species)}) differ from entry {first + 1} on")
    if pdrnew.chemcheck != config.chemcheck:
        raise InconsistentInputs(f"PDRNEW.INP CHEMCHECK cards {pdrnew.chemcheck} but pdr_config.json chemchk_* "
                                 f"give {config.chemcheck}")


def _no_constants(name: str) -> float:
    raise InputError(f"pdr_config.json is not strict JSON: {name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        duplicated = sorted({key for key, _ in pairs if [k for k, _ in pairs].count(key) > 1})
        raise InputError(f"pdr_config.json: key(s) {', '.join(duplicated)} given twice in one object")
    return result


def load_config(text: str) -> Mapping[str, Any]:
    """Strict JSON: no comments, no trailing commas, no NaN/Infinity, no repeated keys."""
    try:
        config = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(f"pdr_config.json is not strict JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InputError("pdr_config.json: expected a JSON object")
    return config


def model_from(inputs: Inputs) -> Model:
    values = inputs.values
    return Model(
        **{key: float(values[key]) for key in ("xnsur", "alpha", "rcore", "sigd", "rtot", "sint", "cosray", "beta",
                                                "zmetal")},
        ifuvmeth=int(values["ifuvmeth"]),
        elements=tuple((key, inputs.elements[key]) for key, _, _ in ELEMENTS if key in inputs.elements),
        network_species=inputs.species,
    )


def read_model(root: Path) -> tuple[Model, Path]:
    """The model and its chemical rate file, from the inputs in ``root`` (the scratch directory)."""
    pdrnew = parse_pdrnew(_read_text(root, "PDRNEW.INP"))  # first, as the Fortran code does
    config = parse_config(load_config(_read_text(root, "pdr_config.json")))
    check_consistent(pdrnew, config)
    model = model_from(config)  # the JSON holds all 19 elements; the cards only some
    try:
        model.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return model, _rate_file(root)


def _read_text(root: Path, name: str) -> str:
    try:
        return (root / name).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {name}: {exc}") from None


def _rate_file(root: Path) -> Path:
    path = root / RATE_FILE
    try:
        with path.open("rb") as stream:  # readable, not merely present (a dangling link fails here)
            stream.read(1)
    except OSError as exc:
        raise InputError(f"chemical rate file {RATE_FILE} ({path}) is not readable: {exc.strerror or exc}") from None
    return path
