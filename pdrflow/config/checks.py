"""The checks a config gets beyond its types: hostile strings, the database URL, keys that must agree,
local paths the run will create or open. Each refuses with one line (``ConfigError``, exit 2).
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, shown
from .models import Config
from .sections import DB_PASSWORD_ENV

MAX_CONFIG_BYTES = 10 * 1024 * 1024  # a config is a few KB: refuse /dev/zero or a mistaken data file
_DB_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed (a prologue line may hold one)


def _holds_a_path(annotation: Any) -> bool:
    return annotation is Path or any(_holds_a_path(arg) for arg in typing.get_args(annotation))


def _check_empty_paths(data: dict[str, Any]) -> None:
    """An empty or blank path would silently mean the current directory (Path("") == "."): refused for every
    key a section's model types as a local path (a kind section: the model of the kind given)."""
    from .kinds import KIND_MODELS, KIND_SECTIONS

    for section, info in Config.model_fields.items():
        if not isinstance(data.get(section), dict):
            continue
        if section in KIND_SECTIONS:
            model = KIND_MODELS.get((section, data[section].get("kind")))
        else:
            model = info.annotation if isinstance(info.annotation, type) else None
        for key, field in model.model_fields.items() if model is not None else ():
            value = data[section].get(key)
            if _holds_a_path(field.annotation) and isinstance(value, str) and not value.strip():
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


def _check_consistency(config: Config) -> None:
    from .kinds import CLUSTER_KINDS, STORAGE_KINDS

    run = config.run
    for kind in (CLUSTER_KINDS[config.cluster.kind], STORAGE_KINDS[config.storage.kind]):
        if kind.check is not None:
            kind.check(config)  # what the kind needs of the other sections, in its own module
    if run.archive_backoff_max < run.archive_backoff_initial:
        raise ConfigError("run.archive_backoff_max: must not be smaller than run.archive_backoff_initial")
    if not math.isfinite(config.kosma_tau.pdr_timeout) or not math.isfinite(config.kosma_tau.onion_timeout):
        raise ConfigError("kosma_tau: timeouts must be finite")
    if config.kosma_tau.standin and config.kosma_tau.home is not None:
        raise ConfigError("kosma_tau.home: give either home or standin: true, not both")
    if not config.kosma_tau.standin and config.kosma_tau.home is None:
        raise ConfigError("kosma_tau.home: required (the KOSMA-tau installation), or set standin: true")


def _check_filesystem(config: Config) -> None:
    """Read-only checks of the local paths the run will create or open, so that a mistake is
    exit 2 with the key named, not a traceback after the ledger or archive was half created.

    Only what cannot be an outage: an archive root below a regular file may be an unmounted
    file system that comes back, so it stays a runtime failure (failed_storage, retried), but
    an archive or scratch root that *is* a file, or a ledger that is a directory, is a typo."""
    from .kinds import KIND_SECTIONS

    paths: list[tuple[str, Path, str]] = [("scratch.root", config.scratch.resolved_root(), "directory")]
    for section in KIND_SECTIONS:  # the directories a kind creates on this host (storage.local: its root)
        paths += [(f"{section}.{key}", path, "directory")
                  for key, path in getattr(config, section).local_directories().items()]
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
