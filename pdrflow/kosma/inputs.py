"""Render a model's ``PDRNEW.INP`` and ``pdr_config.json`` (the KOSMA-tau input contract).

The layout of both files is the template's (``kosma/shipped_templates/`` ships pdrflow's own; a config may
name the predecessor's or a group's own). This module only turns values into the text each file
needs: Fortran list-directed numbers at full precision for ``PDRNEW.INP``, JSON for the other.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from ..errors import ConfigError
from .parameters import DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS, PARAMETERS, ParamValue
from .templates import (
    ELEMENT_PLACEHOLDERS,
    InputTemplates,
    Template,
    TemplateError,
    TemplateKind,
    load_template,
    render_json,
)

CHEM_RATES_LINK = "pdrinpdata/chem_rates.dat"
SPECIES_CARD = "SPECIES  {}"
MODEL_GRID_CARD = "*MODEL GRID {}"


def fortran_number(value: ParamValue) -> str:
    """Format a value the way KOSMA-tau's list-directed reader accepts, at full precision.

    Integers plain; floats with |x| >= 1000 or < 0.1 in exponent form, others fixed. The
    digits are Python's shortest round-trip repr, so nothing is lost (the predecessor's
    four significant digits truncated RTOT).
    """
    if isinstance(value, bool):
        raise TypeError("booleans are not KOSMA-tau values")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        raise ValueError(f"non-finite value {value!r}")
    if value == 0.0:
        return "0.0"
    if 0.1 <= abs(value) < 1000.0:
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    mantissa_digits = "".join(map(str, digits)) or "0"
    power = exponent + len(mantissa_digits) - 1  # type: ignore[operator]
    mantissa = mantissa_digits[0] + "." + (mantissa_digits[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}e{power:+03d}"


def _json_value(value: ParamValue) -> str:
    if isinstance(value, str):
        return json.dumps(value)[1:-1]  # the template holds the quotes: "KT_VARfuvstring_"
    return json.dumps(value, allow_nan=False)


def placeholder_values(
    kind: TemplateKind,
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    model_grid: str | None,
) -> dict[str, str]:
    """The text of every placeholder for one model, as the file of ``kind`` needs it."""
    number = fortran_number if kind == "pdrnew" else _json_value
    values = {name: number(value) for name, value in params.items()}
    values.update({name: number(float(elements[key])) for name, key in ELEMENT_PLACEHOLDERS.items()})
    if kind == "pdrnew":
        values["species"] = "\n".join(SPECIES_CARD.format(species) for species in network_species)
        values["grid"] = MODEL_GRID_CARD.format(model_grid) if model_grid else ""
    else:
        values["species"] = json.dumps(list(network_species))
        values["grid"] = "1" if model_grid else "0"
    return values


@functools.cache
def _builtin(kind: TemplateKind) -> Template:
    return load_template(kind, None)  # shipped with the package: read once per process


def _template(kind: TemplateKind, template: Template | None) -> Template:
    return template if template is not None else _builtin(kind)


def render_pdrnew_inp(
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    model_grid: str | None = None,
    template: Template | None = None,
) -> str:
    """``PDRNEW.INP``; ``model_grid`` fills the grid-mode line (blank when None)."""
    values = placeholder_values("pdrnew", params, network_species, elements, model_grid)
    return _template("pdrnew", template).substitute(values)


def render_pdr_config_json(
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    template: Template | None = None,
    model_grid: str | None = None,
) -> str:
    """``pdr_config.json`` as strict JSON (no comments, no NaN) in the template's key tree."""
    values = placeholder_values("json", params, network_species, elements, model_grid)
    return render_json(_template("json", template), values)


def render_inputs(
    name: str,
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    templates: InputTemplates,
) -> tuple[str, str]:
    """(PDRNEW.INP, pdr_config.json) of one model with the run's templates."""
    model_grid = name if templates.model_grid else None
    return (
        render_pdrnew_inp(params, network_species, elements, model_grid, templates.pdrnew),
        render_pdr_config_json(params, network_species, elements, templates.json, model_grid),
    )


def load_input_templates(pdrnew: Path | None, json_template: Path | None, model_grid: bool) -> InputTemplates:
    """The run's templates from ``kosma_tau.pdrnew_template``/``json_template`` (None: pdrflow's own).

    The JSON template is rendered once with the defaults here, so that a template that cannot
    give valid JSON is refused before any model runs."""
    templates = InputTemplates(load_template("pdrnew", pdrnew), load_template("json", json_template), model_grid)
    defaults = {p.name: p.default for p in PARAMETERS if p.default is not None}
    defaults.update(xnsur=1.0e3, sint=1.0, zmetal=1.0, rtot=1.0e17)
    try:
        render_pdr_config_json(defaults, DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS, templates.json)
    except TemplateError as exc:
        raise ConfigError(f"kosma_tau.json_template: {exc}") from None
    return templates
