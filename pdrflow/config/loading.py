"""Reading a config file and refusing hostile or mistaken input.

A config is user input: a typo, a pasted data file, a hostile YAML document. Each is refused
with one line naming the problem (``ConfigError``, exit 2), before the ledger, the archive or
any scratch directory is written, not as a traceback from halfway through a run. The models
themselves (keys, types, limits) are in :mod:`pdrflow.config`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml
from pydantic import BaseModel, ValidationError

from .config import (
    DB_PASSWORD_ENV,
    KINDS,
    SFTP_PASSWORD_ENV,
    Config,
    LocalClusterConfig,
    LocalStorageConfig,
    SlurmClusterConfig,
    _secret_from_env,
)
from .errors import ConfigError, shown

MAX_CONFIG_BYTES = 10 * 1024 * 1024  # a config is a few KB: refuse /dev/zero or a mistaken data file
# Backends pdrflow supports; the driver module must also be installed (checked at load time).
_DB_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed (a prologue line may hold one)

_KIND_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    (section, name): kind.model for section, kinds in KINDS.items() for name, kind in kinds.items()}
_SECTIONS = ("grid", "kosma_tau", "database", "storage", "cluster", "scratch", "run", "results")
_KIND_SECTIONS = tuple(KINDS)


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in ("password", "path")]


def _format_validation_error(error: ValidationError, root: type[BaseModel]) -> str:
    messages: list[str] = []
    for item in error.errors():
        keys = [str(part) for part in item["loc"] if not isinstance(part, int)]
        kind_model = None
        if len(keys) > 2 and keys[0] in _KIND_SECTIONS:
            # Discriminated unions add the tag ("local") to the location: drop it, keep its model.
            kind_model = _KIND_MODELS.get((keys[0], keys[1]))
            keys = [keys[0], *keys[2:]]
        where = _location(item["loc"])
        if item["type"] == "extra_forbidden":
            model = kind_model if kind_model is not None and len(keys) == 2 else _model_at(root, keys[:-1])
            hint = _did_you_mean(keys[-1], _known_keys(model)) if model else ""
            message = f"{where}: unknown key{hint}"
        elif item["type"] == "missing":
            message = f"{where}: required key is missing"
        elif item["type"] == "string_pattern_mismatch" and ".".join(keys) in _PATTERN_HINTS:
            message = f"{where}: {_PATTERN_HINTS['.'.join(keys)]} (got {shown(item.get('input'))})"
        else:
            value = item.get("input")
            got = f" (got {shown(value)})" if isinstance(value, str | int | float) else ""
            text = str(item["msg"]).removeprefix("Value error, ")
            message = f"{where}: {text}{got}" if "got " not in text else f"{where}: {text}"
        if message not in messages:
            messages.append(message)
    # One line: the first few problems are enough to fix (a list of 10^6 bad values is not).
    more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
    return "; ".join(messages[:3]) + more


# What a value matching each pattern looks like, instead of pydantic's regular expression.
_PATTERN_HINTS = {
    "grid.name": "must be letters, digits and . _ + - starting with a letter or digit (it names the archive directory)",
    "kosma_tau.onion_species": "a species name is letters, digits, + and - (like CO, C+, 13CO)",
    "kosma_tau.network_species": "a species name is letters, digits, +, - and * (like CO, C+, 13CO)",
    "storage.host": "must be a host name, address or ssh_config alias (no spaces, not starting with -)",
    "storage.username": "must be a user name (letters, digits, . _ - @, not starting with -)",
    "storage.root": "must be an absolute directory on the server (starting with /)",
}


def _location(loc: tuple[int | str, ...]) -> str:
    """("grid", "density", 1) -> "grid.density[1]"; discriminator tags and union members dropped."""
    text = ""
    parts = list(loc)
    if len(parts) > 2 and parts[0] in _KIND_SECTIONS:
        parts = [parts[0], *parts[2:]]
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-plain[", "list[", "dict[")) or part in ("int", "float", "str", "none"):
            continue  # pydantic's names for union members, not keys of the config
        else:
            text += ("." if text else "") + str(part)
    return text or "config"


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


ENV_PREFIX = "PDRFLOW__"  # PDRFLOW__RUN__MAX_MODELS=10, PDRFLOW__CLUSTER__SLURM__QUEUE=long


def _env_key_error(name: str, parts: list[str]) -> str | None:
    """Why ``PDRFLOW__...`` names no key of pdrflow.yaml's tree (None: it does), with a suggestion."""
    section = parts[0]
    if section not in _SECTIONS:
        return f"unknown section {section!r}{_did_you_mean(section, list(_SECTIONS))}"
    if len(parts) == 1:
        return "names a whole section; name a key (PDRFLOW__SECTION__KEY)"
    if parts[-1] == "password":
        env = DB_PASSWORD_ENV[0] if section == "database" else SFTP_PASSWORD_ENV[0]
        return f"passwords are never configuration; set {env}"
    if section in _KIND_SECTIONS:
        kinds = {kind: model for (sec, kind), model in _KIND_MODELS.items() if sec == section}
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
        if len(keys) > 2 and keys[0] in _KIND_SECTIONS:
            keys = [keys[0], *keys[2:]]
        given: Any = user
        for key in keys:  # the YAML gave it: the YAML's value is the one refused
            given = given.get(key) if isinstance(given, dict) else None
        if given is not None or len(keys) < 2:
            continue
        kind = str(item["loc"][1]).upper() + "__" if keys[0] in _KIND_SECTIONS else ""
        name = f"{ENV_PREFIX}{keys[0].upper()}__{kind}{'__'.join(keys[1:]).upper()}"
        if name in os.environ and name not in names:
            names.append(name)
    return f" (from {', '.join(names)})" if names else ""


def _merge_defaults(user: dict[str, Any]) -> dict[str, Any]:
    # default < PDRFLOW__ environment < the run's YAML (below, section by section)
    defaults: dict[str, Any] = dask.config.merge(dask.config.get("pdrflow"), env_overrides())
    merged: dict[str, Any] = {}
    for section in _SECTIONS:
        given = user.get(section, {})
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {type(given).__name__}")
        if section in _KIND_SECTIONS:
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
    if data["storage"].get("kind") == "local":
        resolve("storage", "root")
    url = data["database"].get("url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            data["database"]["url"] = f"sqlite:///{base / relative}"


def _yaml_kind(document: Any) -> str:
    return "an empty file" if document is None else type(document).__name__


def _check_empty_paths(data: dict[str, Any]) -> None:
    # An empty or blank path would silently mean the current directory (Path("") == ".").
    keys = [("kosma_tau", "home"), ("scratch", "root"), ("storage", "root"), ("storage", "key_filename"),
            ("storage", "known_hosts"), ("storage", "ssh_config")]
    for section, key in keys:
        value = data[section].get(key)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{section}.{key}: an empty path (leave the key out or use null for the default)")


def _url_password(url: str) -> str | None:
    if url.startswith("sqlite:") and "@" not in url:  # a file path: no credentials, no SQLAlchemy import
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).password


def _check_strings(value: Any, where: str, seen: set[int] | None = None) -> None:
    """No NUL or other control characters in any key or value: they end up in paths, file
    names and the ledger, where they truncate or mislead (a NUL makes every os call fail).

    Each list or mapping is visited once: YAML aliases share objects, and a "billion laughs"
    document is small as a graph but 9^9 items as a tree."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list):
        if id(value) in seen:
            return
        seen.add(id(value))
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ConfigError(f"{where}: control characters are not allowed (got {shown(value)})")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _CONTROL.search(key):
                raise ConfigError(f"{where}: a key with control characters ({shown(key)})")
            _check_strings(item, f"{where}.{key}" if where else str(key), seen)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}[{i}]", seen)




def _check_database_url(url: str) -> None:
    try:
        password = _url_password(url)
    except Exception:  # noqa: BLE001 - sqlalchemy raises several types for bad URLs
        # Not echoed: a malformed URL may still carry a password.
        raise ConfigError("database.url: not a valid database URL (like sqlite:///ledger.sqlite or "
                          "postgresql+psycopg://user@host/db)") from None
    if password is not None:
        raise ConfigError(f"database.url: must not contain a password; set {DB_PASSWORD_ENV[0]} instead")
    if url.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DB_BACKENDS:
        raise ConfigError(f"database.url: unsupported database {shown(backend)} (use one of {', '.join(_DB_BACKENDS)})")
    try:
        parsed.get_dialect().import_dbapi()  # the driver module: psycopg, pymysql, ...
    except Exception as exc:  # noqa: BLE001 - NoSuchModuleError, ImportError
        raise ConfigError(f"database.url: the driver for {shown(parsed.drivername)} is not installed "
                          f"({type(exc).__name__}; pip install pdrflow[postgres] or pdrflow[mysql])") from None


def parse_config(user: Any, path: Path) -> Config:
    """Validate an already-loaded YAML document (no file-system checks)."""
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {_yaml_kind(user)}")
    unknown = [key for key in user if key not in _SECTIONS]
    if {"pdr", "model_params"} & set(unknown):
        raise ConfigError(f"{path}: this is a pdr_run (predecessor) config; translate it, with its database and "
                          f"archive, by `pdrflow migrate {path} --out NEW_CONFIG`")
    if unknown:
        key = str(unknown[0])[:60]
        raise ConfigError(f"{key}: unknown section{_did_you_mean(key, list(_SECTIONS))}")
    _check_strings(user, "")
    data = _merge_defaults(user)
    for section in ("database", "storage"):
        if "password" in data[section]:
            env = DB_PASSWORD_ENV[0] if section == "database" else SFTP_PASSWORD_ENV[0]
            raise ConfigError(f"{section}.password: passwords are never read from the config file; set {env}")
    if "url" in data["database"] and isinstance(data["database"]["url"], str):
        _check_database_url(data["database"]["url"])
    _check_empty_paths(data)
    _resolve_paths(data, path.parent)
    data["database"]["password"] = _secret_from_env(DB_PASSWORD_ENV)
    if data["storage"].get("kind") == "sftp":
        data["storage"]["password"] = _secret_from_env(SFTP_PASSWORD_ENV)
    try:
        config = Config(**data, path=path)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, Config) + _env_origin(exc, user)) from None
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    run = config.run
    if isinstance(config.cluster, SlurmClusterConfig) and config.cluster.min_jobs > config.cluster.max_jobs:
        raise ConfigError("cluster.min_jobs: must not be larger than cluster.max_jobs")
    if run.archive_backoff_max < run.archive_backoff_initial:
        raise ConfigError("run.archive_backoff_max: must not be smaller than run.archive_backoff_initial")
    if not math.isfinite(config.kosma_tau.pdr_timeout) or not math.isfinite(config.kosma_tau.onion_timeout):
        raise ConfigError("kosma_tau: timeouts must be finite")
    if isinstance(config.cluster, LocalClusterConfig):
        # Local workers are processes on this machine: far beyond its cores is a typo, and a
        # runaway number of worker processes takes the machine down before anything is refused.
        cores = os.cpu_count() or 1
        limit = max(8, 4 * cores)
        slots = (config.cluster.n_workers or cores) * config.cluster.threads_per_worker
        if slots > limit:
            raise ConfigError(f"cluster.n_workers: {slots} worker threads on a {cores}-core machine; at most {limit} "
                              "(4 per core) for a local cluster")
    if config.kosma_tau.standin and config.kosma_tau.home is not None:
        raise ConfigError("kosma_tau.home: give either home or standin: true, not both")
    if not config.kosma_tau.standin and config.kosma_tau.home is None:
        raise ConfigError("kosma_tau.home: required (the KOSMA-tau installation), or set standin: true")
    if isinstance(config.storage, LocalStorageConfig):
        archive = config.storage.root.resolve()
        scratch = config.scratch.resolved_root().resolve()
        if archive == scratch or archive.is_relative_to(scratch) or scratch.is_relative_to(archive):
            raise ConfigError("storage.root: the archive and the scratch root must not contain each other")


def _check_filesystem(config: Config) -> None:
    """Read-only checks of the local paths the run will create or open, so that a mistake is
    exit 2 with the key named, not a traceback after the ledger or archive was half created.

    Only what cannot be an outage: an archive root below a regular file may be an unmounted
    file system that comes back, so it stays a runtime failure (failed_storage, retried), but
    an archive or scratch root that *is* a file, or a ledger that is a directory, is a typo."""
    paths: list[tuple[str, Path, str]] = [("scratch.root", config.scratch.resolved_root(), "directory")]
    if isinstance(config.storage, LocalStorageConfig):
        paths.append(("storage.root", config.storage.root, "directory"))
    url = config.database.url
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        paths.append(("database.url", Path(url.removeprefix("sqlite:///")), "file"))
    for key, path, kind in paths:
        try:
            if path.exists():
                if kind == "directory" and not path.is_dir():
                    raise ConfigError(f"{key}: {path} exists and is not a directory")
                if kind == "file" and path.is_dir():
                    raise ConfigError(f"{key}: the SQLite ledger {path} is a directory")
            if kind != "file":
                continue
            # The ledger's nearest existing ancestor must be a directory, or it cannot be created
            # (every command opens the ledger, so this is never something a retry would fix).
            for parent in path.parents:
                if parent.exists():
                    if not parent.is_dir():
                        raise ConfigError(f"{key}: {parent} is not a directory, so {path} cannot be created")
                    break
        except OSError as exc:  # ENAMETOOLONG, EACCES, ELOOP ...
            raise ConfigError(f"{key}: cannot use {shown(str(path))} ({exc.strerror})") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (no Python tags) that refuses a key given twice in one mapping: PyYAML would
    silently keep the last one, so half of a config could be ignored without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {shown(key)} is given twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _read_limited(config_path: Path) -> bytes:
    with config_path.open("rb") as stream:
        raw = stream.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{config_path}: larger than {MAX_CONFIG_BYTES // 2**20} MB, not a config file")
    return raw


def _parse_yaml(text: str, source: str) -> Any:
    """One YAML document (a config file, or a PDRFLOW__ variable's value), refused in one line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no Python tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5000 digits, a bad timestamp
        raise ConfigError(f"{source}: invalid YAML: {str(exc)[:120]}") from None


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
