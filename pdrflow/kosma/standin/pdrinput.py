"""Read and cross-check the stand-in's PDR inputs: ``PDRNEW.INP`` and ``pdr_config.json``. NOT KOSMA-tau.

KOSMA-tau reads both files; they are rendered from the same parameters, so any disagreement is a
renderer bug. The stand-in refuses such inputs (exit 3) instead of silently picking one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..parameters import ELEMENTS
from .physics import PHYSICAL_KEYS, Model

# Part I cards in PDRNEW.INP, each a description line naming the card and then one value line.
_PART_ONE_CARDS = tuple(key.upper() for key in PHYSICAL_KEYS)
_ELEMENT_CARDS = {card: key for key, card, _ in ELEMENTS if card is not None}
_REQUIRED_ELEMENTS = ("C", "13C", "O")


class InputError(Exception):
    """An input file is missing or malformed (exit 2)."""


class InconsistentInputs(Exception):
    """PDRNEW.INP and pdr_config.json disagree (exit 3)."""


@dataclass(frozen=True)
class PdrNew:
    cards: dict[str, float]  # Part I card -> value
    species: list[str]
    elements: dict[str, float]  # pdr_config.json element key -> value


def fortran_float(text: str) -> float:
    """A list-directed Fortran real: ``1.0e+03``, ``1.0d+03``, ``1.0D3``; the first of ``a, b``."""
    token = text.split(",")[0].strip()
    try:
        return float(token.replace("d", "e").replace("D", "e"))
    except ValueError:
        raise InputError(f"{token!r} is not a number") from None


def _tokens(line: str) -> list[str]:
    return line.replace(":", " ").replace(",", " ").split()


def parse_pdrnew(text: str) -> PdrNew:
    lines = text.splitlines()
    cards: dict[str, float] = {}
    species: list[str] = []
    elements: dict[str, float] = {}
    for index, line in enumerate(lines):
        words = line.split()
        if not words or line.startswith("*"):
            continue
        if words[0] == "SPECIES" and len(words) == 2:
            species.append(words[1])
        elif words[0] in _ELEMENT_CARDS and len(words) == 2:
            elements[_ELEMENT_CARDS[words[0]]] = _card_value(words[0], words[1])
        else:
            # A description line names its card; the value is on the next line (first one wins).
            for card in set(_tokens(line)) & set(_PART_ONE_CARDS) - set(cards):
                if index + 1 >= len(lines):
                    raise InputError(f"PDRNEW.INP: no value line after the {card} description")
                cards[card] = _card_value(card, lines[index + 1])
    missing = [card for card in _PART_ONE_CARDS if card not in cards]
    missing += [card for card, key in _ELEMENT_CARDS.items() if key in _REQUIRED_ELEMENTS and key not in elements]
    if missing:
        raise InputError(f"PDRNEW.INP lacks {', '.join(missing)}")
    return PdrNew(cards, species, elements)


def _card_value(card: str, text: str) -> float:
    try:
        return fortran_float(text)
    except InputError as exc:
        raise InputError(f"PDRNEW.INP {card}: {exc}") from None


def _number(group: Mapping[str, Any], key: str, where: str) -> float:
    value = group.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"pdr_config.json {where}.{key}: expected a number, got {value!r}")
    return float(value)


def _group(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    group = config.get(name)
    if not isinstance(group, dict):
        raise InputError(f"pdr_config.json: missing group {name!r}")
    return group


def model_from_config(config: Mapping[str, Any]) -> Model:
    physical = _group(config, "physical_params")
    element_group = _group(config, "element_abundances")
    elements = {key: _number(element_group, key, "element_abundances") for key in element_group}
    for key in _REQUIRED_ELEMENTS:
        if key not in elements:
            raise InputError(f"pdr_config.json element_abundances: missing {key!r}")
    species = config.get("species")
    if not isinstance(species, list) or not all(isinstance(s, str) and s for s in species):
        raise InputError("pdr_config.json species: expected a list of species names")
    return Model(
        **{key: _number(physical, key, "physical_params") for key in PHYSICAL_KEYS},
        ifuvmeth=int(_number(_group(config, "radiative_transfer"), "ifuvmeth", "radiative_transfer")),
        elements=tuple(elements.items()),
        network_species=tuple(species),
    )


def check_consistent(pdrnew: PdrNew, model: Model) -> None:
    """Every value both files hold must agree (relative tolerance 1e-9)."""
    for card, value in pdrnew.cards.items():
        other = getattr(model, card.lower())
        if not math.isclose(value, other, rel_tol=1e-9):
            raise InconsistentInputs(f"PDRNEW.INP {card}={value!r} but pdr_config.json {card.lower()}={other!r}")
    config_elements = dict(model.elements)
    for key, value in pdrnew.elements.items():
        if key in config_elements and not math.isclose(value, config_elements[key], rel_tol=1e-9):
            raise InconsistentInputs(f"PDRNEW.INP element {key}={value!r} but pdr_config.json {key}="
                                     f"{config_elements[key]!r}")
    if pdrnew.species and tuple(pdrnew.species) != model.network_species:
        raise InconsistentInputs("PDRNEW.INP SPECIES cards and pdr_config.json species list differ")


def read_model(root: Path) -> tuple[Model, Path]:
    """The model and its chemical rate file, from the inputs in ``root`` (the scratch directory)."""
    try:
        pdrnew = parse_pdrnew((root / "PDRNEW.INP").read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read PDRNEW.INP: {exc}") from None
    try:
        config = json.loads((root / "pdr_config.json").read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read pdr_config.json: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"pdr_config.json is not strict JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InputError("pdr_config.json: expected a JSON object")
    model = model_from_config(config)
    check_consistent(pdrnew, model)
    model.validate()
    return model, _rate_file(root, config.get("chemical_database_file"))


def _rate_file(root: Path, name: object) -> Path:
    if not isinstance(name, str) or not name:
        raise InputError("pdr_config.json chemical_database_file: expected a file name")
    path = root / name
    try:
        with path.open("rb") as stream:  # readable, not merely present (a dangling link fails here)
            stream.read(1)
    except OSError as exc:
        raise InputError(f"chemical rate file {name} ({path}) is not readable: {exc.strerror or exc}") from None
    return path
