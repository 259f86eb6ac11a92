"""``PDRFLOW__SECTION[__KIND]__KEY`` environment variables: read as a tree shaped like pdrflow.yaml, each
name checked against the config's keys, its values parsed as YAML and checked like the file's."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .checks import MAX_CONFIG_BYTES, _check_strings, _parse_yaml
from .kinds import KIND_MODELS, KIND_SECTIONS, password_variable
from .messages import _did_you_mean, _known_keys, _model_at
from .models import SECTION_NAMES, Config

ENV_PREFIX = "PDRFLOW__"  # PDRFLOW__RUN__MAX_MODELS=10, PDRFLOW__CLUSTER__SLURM__QUEUE=long


def _env_key_error(name: str, parts: list[str]) -> str | None:
    """Why ``PDRFLOW__...`` names no key of pdrflow.yaml's tree (None: it does), with a suggestion."""
    section = parts[0]
    if section not in SECTION_NAMES:
        return f"unknown section {section!r}{_did_you_mean(section, list(SECTION_NAMES))}"
    if len(parts) == 1:
        return "names a whole section; name a key (PDRFLOW__SECTION__KEY)"
    if parts[-1] == "password":
        env = password_variable(section)
        return "passwords are never configuration" + (f"; set {env}" if env else "")
    if section in KIND_SECTIONS:
        kinds = {kind: model for (sec, kind), model in KIND_MODELS.items() if sec == section}
        if parts[1] == "kind":
            return None if len(parts) == 2 else "kind is a single value"
        if parts[1] not in kinds:
            owners = [kind for kind, model in kinds.items() if parts[1] in _known_keys(model)]
            if owners:  # the kind is part of the name, as in pdrflow.yaml
                return f"a {section} key is set per kind: {ENV_PREFIX}{section.upper()}__{owners[0].upper()}__" \
                       f"{'__'.join(parts[1:]).upper()}"
            return f"unknown {section} kind {parts[1]!r} (choose one of {', '.join(sorted(kinds))}, or kind)"
        model: type[BaseModel] | None = kinds[parts[1]]
        keys = parts[2:]
        if not keys:
            return f"names all of {section}.{parts[1]}; name a key"
    else:
        model = _model_at(Config, [section])
        keys = parts[1:]
    for depth, key in enumerate(keys):
        if model is None:
            return None  # below a free-form mapping (e.g. grid.parameters): pydantic checks the values
        if key not in model.model_fields:
            where = ".".join([section, *keys[:depth]])
            return f"unknown key {where}.{key}{_did_you_mean(key, _known_keys(model))}"
        annotation = model.model_fields[key].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None and depth + 1 < len(keys) and not _is_mapping(annotation):
            return f"{'.'.join([section, *keys[:depth + 1]])} is a single value, not a mapping of keys"
    return None


def _is_mapping(annotation: Any) -> bool:
    """A dict-typed key (or an optional one): names below it are the user's own keys."""
    if annotation is dict or typing.get_origin(annotation) in (dict, Mapping):
        return True
    return any(_is_mapping(member) for member in typing.get_args(annotation)) if typing.get_origin(
        annotation) in (typing.Union, types.UnionType) else False


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``PDRFLOW__SECTION__KEY`` variables as a tree shaped like pdrflow.yaml's ``pdrflow:`` block.

    They override pdrflow.yaml (and dask's own ``~/.config/dask``, ``DASK_PDRFLOW__...``); a run's
    YAML overrides them. A value is YAML, read exactly as in the config file (``[1.0e3, 1.0e4]``,
    ``null``, ``"007"``), and goes through the same hostile-input checks, with the variable named."""
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name.removeprefix(ENV_PREFIX).lower().split("__")
        if not all(parts):
            raise ConfigError(f"{name}: an empty key between double underscores")
        problem = _env_key_error(name, parts)
        if problem is not None:
            raise ConfigError(f"{name}: {problem}")
        text = env[name]
        if len(text.encode("utf-8", "surrogateescape")) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{name}: larger than {MAX_CONFIG_BYTES // 2**20} MB")
        value = _parse_yaml(text, name)
        _check_strings(value, name)
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # PDRFLOW__RUN__X=1 and PDRFLOW__RUN__X__Y=2 together
                raise ConfigError(f"{name}: conflicts with another {ENV_PREFIX} variable")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"{name}: conflicts with another {ENV_PREFIX} variable")
        node[parts[-1]] = value
    return tree


def _env_origin(error: ValidationError, user: dict[str, Any]) -> str:
    """The PDRFLOW__ variables a refused value came from (not the YAML file), as " (from NAME)"."""
    names = []
    for item in error.errors():
        keys = [str(part) for part in item["loc"] if not isinstance(part, int)]
        if len(keys) > 2 and keys[0] in KIND_SECTIONS:
            keys = [keys[0], *keys[2:]]
        given: Any = user
        for key in keys:  # the YAML gave it: the YAML's value is the one refused
            given = given.get(key) if isinstance(given, dict) else None
        if given is not None or len(keys) < 2:
            continue
        kind = str(item["loc"][1]).upper() + "__" if keys[0] in KIND_SECTIONS else ""
        name = f"{ENV_PREFIX}{keys[0].upper()}__{kind}{'__'.join(keys[1:]).upper()}"
        if name in os.environ and name not in names:
            names.append(name)
    return f" (from {', '.join(names)})" if names else ""
