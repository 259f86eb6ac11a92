"""The pdrflow config equivalent to a predecessor config (and to what its database recorded).

The axes keep the predecessor's strings as written (``density_tenthdex: ["30"]``) and
``grid.naming: predecessor``, so the new config names models as the old archive does. Settings the
old config left to pdr_run's built-in defaults (the chemical network, element abundances, other
parameters) are taken from what its database recorded for the grid, where that differs from
pdrflow's defaults: the models still to compute then get the same physics as the adopted ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..kosma.parameters import AXIS_PARAMETERS, DEFAULT_ONION_SPECIES, ELEMENT_DEFAULTS, PARAMETERS, ParamValue
from .predecessor import Note, OldConfig
from .predecessor_db import OldModel

DEFAULT_LEDGER_URL = "sqlite:///pdrflow-ledger.sqlite"  # relative: next to the new config
_AXIS_KEYS = {"metal": "metallicity_percent", "dens": "density_tenthdex", "mass": "mass_tenthdex",
              "chi": "fuv_tenthdex"}
H = TypeVar("H", bound=Hashable)


def close(a: ParamValue, b: ParamValue) -> bool:
    """Equal up to what a database column keeps (MySQL FLOAT is single precision)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    fa, fb = float(a), float(b)
    return fa == fb or math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-300)


def _most_common(values: Iterable[H]) -> tuple[H | None, int, int]:
    """(most common value, its count, number of values)."""
    counts = Counter(values)
    if not counts:
        return None, 0, 0
    value, count = counts.most_common(1)[0]
    return value, count, sum(counts.values())


def _finished(models: Sequence[OldModel]) -> list[OldModel]:
    return [m for m in models if m.status == "finished"] or list(models)


def _network(old: OldConfig, models: Sequence[OldModel], notes: list[Note]) -> list[str] | None:
    if old.network_species is not None:
        return old.network_species
    network, count, total = _most_common(tuple(m.network_species) for m in _finished(models) if m.network_species)
    if network is None:
        notes.append(Note("kosma_tau.network_species", "not recorded by pdr_run: pdrflow's default network",
                          matters=False))
        return None
    if count < total:
        notes.append(Note("kosma_tau.network_species", f"{total - count} of {total} models were computed with "
                          "another network than the rest; they are not adopted", matters=False))
    return list(network)


def _abundances(old: OldConfig, models: Sequence[OldModel], notes: list[Note]) -> dict[str, float]:
    if old.abundances:
        return dict(old.abundances)
    recorded, count, total = _most_common(tuple(sorted(m.elements.items())) for m in _finished(models) if m.elements)
    if recorded is None:
        return {}
    if count < total:
        notes.append(Note("grid.abundances", f"{total - count} of {total} models were computed with other element "
                          "abundances than the rest; they are not adopted", matters=False))
    return {key: value for key, value in recorded if key in ELEMENT_DEFAULTS and not close(value, ELEMENT_DEFAULTS[key])}


def _parameters(old: OldConfig, models: Sequence[OldModel], notes: list[Note]) -> dict[str, ParamValue]:
    parameters: dict[str, ParamValue] = dict(old.parameters)
    finished = _finished(models)
    for p in PARAMETERS:
        if p.name in AXIS_PARAMETERS or p.name in parameters or p.default is None:
            continue
        value, count, total = _most_common(m.parameters[p.name] for m in finished if p.name in m.parameters)
        if value is None or close(value, p.default):
            continue
        # pdr_run's built-in defaults of its day: keep the grid's physics as it was computed.
        parameters[p.name] = value
        share = "all" if count == total else f"{count} of {total}"
        notes.append(Note(f"grid.parameters.{p.name}", f"{value!r} as pdr_run recorded it for {share} models "
                          f"(pdrflow's default is {p.default!r})", matters=False))
    return parameters


def build_document(old: OldConfig, models: Sequence[OldModel], ledger_url: str | None,
                   notes: list[Note]) -> dict[str, Any]:
    """The new config as a YAML-ready mapping; what is not carried over goes to ``notes``."""
    grid: dict[str, Any] = {"name": old.grid, "naming": "predecessor"}
    for key, new_key in _AXIS_KEYS.items():
        grid[new_key] = list(old.axes[key])
    parameters = _parameters(old, models, notes)
    if parameters:
        grid["parameters"] = parameters
    abundances = _abundances(old, models, notes)
    if abundances:
        grid["abundances"] = abundances
    kosma: dict[str, Any] = {
        "home": str(old.home),
        "pdr_executable": old.pdr_executable,
        "onion_executable": old.onion_executable,
        "helper_executables": list(old.helpers),
        "onion_species": list(old.onion_species or DEFAULT_ONION_SPECIES),
    }
    if old.chem_rates is not None:
        kosma["chem_rates"] = old.chem_rates
    network = _network(old, models, notes)
    if network is not None:
        kosma["network_species"] = network
    if old.pdrnew_template is not None:
        kosma["pdrnew_template"] = str(old.pdrnew_template)
    if old.json_template is not None:
        kosma["json_template"] = str(old.json_template)
    if old.pdr_timeout is not None:
        kosma["pdr_timeout"] = old.pdr_timeout
    storage: dict[str, Any]
    if old.storage.kind == "local":
        storage = {"kind": "local", "root": old.storage.root}
    else:
        storage = {"kind": "sftp", "host": old.storage.host, "root": old.storage.root}
        if old.storage.port is not None:
            storage["port"] = old.storage.port
        if old.storage.username is not None:
            storage["username"] = old.storage.username
    return {
        "grid": grid,
        "kosma_tau": kosma,
        "database": {"url": ledger_url or DEFAULT_LEDGER_URL},
        "storage": storage,
    }


def render(document: dict[str, Any], old_path: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# Written by `pdrflow migrate` from the pdr_run config {old_path} ({stamp}).\n"
              "# The archive and templates are the predecessor's; the ledger is pdrflow's own.\n")
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110)
