"""Reading a config file and refusing hostile or mistaken input.

A config is user input: a typo, a pasted data file, a hostile YAML document. Each is refused
with one line naming the problem (``ConfigError``, exit 2), before the ledger, the archive or
any scratch directory is written, not as a traceback from halfway through a run. The models
themselves (keys, types, limits) are in :mod:`.models`, the checks in :mod:`.checks`, the
environment's overrides in :mod:`.env`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.config
from pydantic import ValidationError

from ..errors import ConfigError, shown
from .checks import (
    MAX_CONFIG_BYTES,
    _check_consistency,
    _check_database_url,
    _check_empty_paths,
    _check_filesystem,
    _check_strings,
    _parse_yaml,
)
from .env import _env_origin, env_overrides
from .kinds import KIND_MODELS, KIND_SECTIONS, password_variable
from .messages import _did_you_mean, _format_validation_error
from .models import SECTION_NAMES, Config
from .sections import DB_PASSWORD_ENV, _secret_from_env, password_variables


def _merge_defaults(user: dict[str, Any]) -> dict[str, Any]:
    # default < PDRFLOW__ environment < the run's YAML (below, section by section)
    defaults: dict[str, Any] = dask.config.merge(dask.config.get("pdrflow"), env_overrides())
    merged: dict[str, Any] = {}
    for section in SECTION_NAMES:
        given = user.get(section, {})
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {type(given).__name__}")
        if section in KIND_SECTIONS:
            kind = given.get("kind", defaults[section]["kind"])
            kind_defaults = defaults[section].get(kind) if isinstance(kind, str) else None
            if kind_defaults is None:
                choices = sorted(k for k in defaults[section] if k != "kind")
                raise ConfigError(f"{section}.kind: unknown kind {shown(kind)} (choose one of {', '.join(choices)})")
            merged[section] = {**kind_defaults, **given, "kind": kind}
        else:
            merged[section] = dask.config.merge(defaults.get(section, {}), given)
    return merged



def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in the YAML are relative to the YAML file, not to the current directory."""

    def resolve(section: str, key: str) -> None:
        value = data[section].get(key)
        if isinstance(value, str) and value:
            data[section][key] = str(base / Path(value).expanduser())

    resolve("kosma_tau", "home")
    resolve("kosma_tau", "pdrnew_template")
    resolve("kosma_tau", "json_template")
    resolve("scratch", "root")
    resolve("scratch", "staging")
    for section in KIND_SECTIONS:  # the keys its kind holds as local paths (storage.local: root)
        model = KIND_MODELS.get((section, data[section].get("kind")))
        for key in model._CONFIG_RELATIVE if model is not None else ():
            resolve(section, key)
    url = data["database"].get("url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            data["database"]["url"] = f"sqlite:///{base / relative}"


def _yaml_kind(document: Any) -> str:
    return "an empty file" if document is None else type(document).__name__


def parse_config(user: Any, path: Path) -> Config:
    """Validate an already-loaded YAML document (no file-system checks)."""
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {_yaml_kind(user)}")
    unknown = [key for key in user if key not in SECTION_NAMES]
    if {"pdr", "model_params"} & set(unknown):
        raise ConfigError(f"{path}: this is a pdr_run (predecessor) config; translate it, with its database and "
                          f"archive, by `pdrflow migrate {path} --out NEW_CONFIG`")
    if unknown:
        key = str(unknown[0])[:60]
        raise ConfigError(f"{key}: unknown section{_did_you_mean(key, list(SECTION_NAMES))}")
    _check_strings(user, "")
    data = _merge_defaults(user)
    for section in ("database", *KIND_SECTIONS):
        if "password" in data[section]:
            env = password_variable(section)
            raise ConfigError(f"{section}.password: passwords are never read from the config file"
                              + (f"; set {env}" if env else ""))
    if "url" in data["database"] and isinstance(data["database"]["url"], str):
        _check_database_url(data["database"]["url"])
    _check_empty_paths(data)
    _resolve_paths(data, path.parent)
    data["database"]["password"] = _secret_from_env(DB_PASSWORD_ENV)
    for section in KIND_SECTIONS:  # a kind with a password (storage.sftp) reads it from its variables
        model = KIND_MODELS.get((section, data[section]["kind"]))
        if model is not None and password_variables(model):
            data[section]["password"] = _secret_from_env(password_variables(model))
    try:
        config = Config(**data, path=path)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, Config) + _env_origin(exc, user)) from None
    _check_consistency(config)
    return config


def _read_limited(config_path: Path) -> bytes:
    with config_path.open("rb") as stream:
        raw = stream.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{config_path}: larger than {MAX_CONFIG_BYTES // 2**20} MB, not a config file")
    return raw


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError with a one-line reason."""
    config_path = Path(path).expanduser().absolute()
    if "\x00" in str(config_path):
        raise ConfigError(f"{shown(str(path))}: a path with a NUL character")
    try:
        raw = _read_limited(config_path)
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{config_path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_path}: not UTF-8 text (byte {exc.start})") from None
    document = _parse_yaml(text, str(config_path))
    try:
        config = parse_config(document, config_path)
    except RecursionError:
        raise ConfigError(f"{config_path}: nested too deeply to be a config") from None
    _check_filesystem(config)
    return config
