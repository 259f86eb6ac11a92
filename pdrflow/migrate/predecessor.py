"""Reading what the predecessor (pdr_run) left: its YAML config (its database: ``predecessor_db.py``).

Nothing here evaluates a value: pdr_run passed axis strings through Python ``eval()``; pdrflow
accepts plain numbers only and refuses the rest with one line. The database is only read
(SQLAlchemy Core ``text()`` queries through its URL, so SQLite, MySQL and PostgreSQL work alike).

What pdr_run reads, as its code does (pdr_run ``cli/runner.py``, ``core/engine.py``,
``database/db_manager.py``, ``cli/preflight.py``):
- sections ``database``, ``storage``, ``pdr``, ``user``, ``model_params`` (alias ``model_parameters``),
  ``non_default_params`` (alias ``non_default_parameters``), ``directories``, ``simline``, ``uv_continuum``;
- ``PDR_DB_TYPE/HOST/PORT/DATABASE/USERNAME/PASSWORD/FILE`` always override ``database``;
- ``PDR_STORAGE_TYPE/DIR/HOST/USER`` apply only when the file has no ``storage`` section, and
  ``PDR_BASE_DIR``/``PDR_EXEC_PATH`` only when it has no ``pdr`` section (which pdrflow refuses).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, shown
from ..kosma.parameters import AXIS_PARAMETERS, PARAMETERS_BY_NAME, ParamValue

ORIGIN = "pdr_run"
MAX_OLD_CONFIG_BYTES = 1024 * 1024
# A plain decimal number as a string: anything else (``3*10``, ``1e3``-as-tenth-dex aside) is refused.
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$")
_SPECIES = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+\-*]{0,39}$")

# elfracNN (NN = mass number) -> pdrflow element key (pdrflow.kosma.parameters.ELEMENTS)
ELFRAC_ELEMENTS: dict[str, str] = {
    "elfrac4": "He", "elfrac12": "C", "elfrac13": "13C", "elfrac14": "N", "elfrac16": "O", "elfrac18": "18O",
    "elfrac19": "F", "elfrac20": "Ne", "elfrac23": "Na", "elfrac24": "Mg", "elfrac27": "Al", "elfrac28": "Si",
    "elfrac31": "P", "elfrac32": "S", "elfrac35": "Cl", "elfrac39": "K", "elfrac40": "Ar", "elfrac41": "Ca",
    "elfrac56": "Fe",
}
AXIS_KEYS = ("metal", "dens", "mass", "chi")  # model_params keys, in the order of the archive name
_SECTIONS = ("database", "storage", "pdr", "user", "model_params", "model_parameters", "non_default_params",
             "non_default_parameters", "directories", "simline", "uv_continuum")
_DB_KEYS = {"type", "path", "host", "port", "database", "username", "user", "password", "pool_size", "max_overflow",
            "pool_timeout", "pool_recycle", "pool_pre_ping", "connect_args", "diagnostics_enabled",
            "session_timeout_s"}
_STORAGE_KEYS = {"type", "base_dir", "rclone_remote", "use_mount", "mount_point", "host", "port", "username",
                 "password", "use_local_copy", "remote_path_prefix"}
_PDR_KEYS = {"model_name", "base_dir", "pdr_file_name", "onion_file_name", "getctrlind_file_name", "mrt_file_name",
             "pdrinp_template_file", "json_template_file", "chem_database", "chem_origin", "exe_revision",
             "compilation_date", "max_walltime_s"}
_MODEL_PARAM_EXTRA = {"species", "alpha", "rcore", "chemistry", "default_species", "reserved_cpus", "col"}
# Where pdr_run looks for a template under pdr.base_dir, in its order (engine._setup_template_files).
TEMPLATE_DIRS = ("templates", "pdrinpdata/templates", ".", "pdrinpdata", "onioninpdata", "In")
ENV_DB = {"PDR_DB_TYPE": "type", "PDR_DB_HOST": "host", "PDR_DB_PORT": "port", "PDR_DB_DATABASE": "database",
          "PDR_DB_USERNAME": "username", "PDR_DB_FILE": "path"}
ENV_STORAGE = {"PDR_STORAGE_TYPE": "type", "PDR_STORAGE_DIR": "base_dir", "PDR_STORAGE_HOST": "host",
               "PDR_STORAGE_USER": "username"}


@dataclass(frozen=True)
class Note:
    """Something of the old config pdrflow does not carry over; ``matters``: refusing is safer than guessing."""

    key: str
    text: str
    matters: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


@dataclass(frozen=True)
class OldDatabase:
    kind: str  # sqlite, mysql, postgresql
    path: Path | None = None  # sqlite
    host: str | None = None
    port: int | None = None
    username: str | None = None
    database: str | None = None

    def url(self, password: str | None) -> Any:
        """The SQLAlchemy URL (password only in the object, never rendered unmasked by pdrflow)."""
        from sqlalchemy.engine import URL

        if self.kind == "sqlite":
            # Read-only: a mistyped path must not leave an empty database file behind.
            return URL.create("sqlite", database=f"file:{self.path}?mode=ro", query={"uri": "true"})
        driver = "mysql+pymysql" if self.kind == "mysql" else "postgresql+psycopg"
        return URL.create(driver, username=self.username, password=password, host=self.host, port=self.port,
                          database=self.database)

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite {self.path}"
        return f"{self.kind} {self.username or ''}@{self.host}:{self.port or ''}/{self.database}"


@dataclass(frozen=True)
class OldStorage:
    kind: str  # local or sftp
    root: str  # base_dir: the directory holding <model_name>/{pdrgrid,oniongrid}
    host: str | None = None
    port: int | None = None
    username: str | None = None


@dataclass
class OldConfig:
    """The predecessor's config, checked, with the environment overrides it would have applied."""

    path: Path
    grid: str
    home: Path
    pdr_executable: str
    onion_executable: str
    helpers: list[str]
    chem_rates: str | None
    chem_origin: str | None
    pdrnew_template: Path | None
    json_template: Path | None
    pdr_timeout: float | None
    axes: dict[str, list[str]]  # metal/dens/mass/chi -> strings as written
    onion_species: list[str]
    network_species: list[str] | None  # model_params.chemistry, if given
    parameters: dict[str, ParamValue]  # fixed KOSMA-tau parameters (non_default + alpha/rcore)
    abundances: dict[str, float]  # from elfracNN keys
    database: OldDatabase
    db_password: str | None = field(repr=False, default=None)
    storage: OldStorage = field(default_factory=lambda: OldStorage("local", "/"))
    user: dict[str, str] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {shown(key)} is given twice",
                                                        key_node.start_mark)
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_OLD_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: predecessor config not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_OLD_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than 1 MB, not a pdr_run config")
    try:
        document = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeySafeLoader)  # a SafeLoader: no Python tags
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or 'malformed'}") from None
    except (RecursionError, ValueError, OverflowError):
        raise ConfigError(f"{path}: invalid YAML") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(document).__name__}")
    return document


def _section(document: Mapping[str, Any], *names: str, required: bool = True) -> tuple[str, dict[str, Any]] | None:
    present = [name for name in names if name in document]
    if len(present) > 1:
        raise ConfigError(f"{present[1]}: given together with {present[0]} (pdr_run treats them as one section; "
                          "merge them)")
    if not present:
        if required:
            raise ConfigError(f"{names[0]}: required section is missing")
        return None
    body = document[present[0]]
    if not isinstance(body, dict):
        raise ConfigError(f"{present[0]}: must be a mapping of keys, got {type(body).__name__}")
    return present[0], body


def _string(value: object, where: str, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or (isinstance(value, str) and not value.strip()):
        raise ConfigError(f"{where}: expected {what}, got {shown(value)}")
    text = str(value).strip()
    if pattern is not None and not pattern.match(text):
        raise ConfigError(f"{where}: expected {what}, got {shown(value)}")
    return text


def _port(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: expected a port number, got {shown(value)}")
    return value


def _axis_strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of strings like [\"30\"], got {shown(value)}")
    strings: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ConfigError(f"{where}[{i}]: expected a string like \"30\", got {shown(item)}")
        text = str(item).strip()
        if not _PLAIN_NUMBER.match(text):
            raise ConfigError(f"{where}[{i}]: {shown(item)} is not a plain number; pdr_run evaluated it as Python "
                              "code, pdrflow never evaluates input (write the value it stands for)")
        strings.append(text)
    if len(set(strings)) != len(strings):
        raise ConfigError(f"{where}: a value is listed twice")
    return strings


def _species_list(value: object, where: str) -> list[str]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected a list of species, got {shown(value)}")
    species = [_string(item, f"{where}[{i}]", _SPECIES, "a species name like CO or C+") for i, item in enumerate(items)]
    if len(set(species)) != len(species):
        raise ConfigError(f"{where}: a species is listed twice")
    return species


def _parameter(name: str, value: object, where: str) -> ParamValue:
    kind = PARAMETERS_BY_NAME[name].kind
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"{where}: a list of {len(value)} values; pdr_run names models by the four axes only, "
                              "so varied parameters cannot be carried over (one grid per value)")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    if kind is str:
        return _string(value, where, _FILE_NAME, "a file-name-like string")
    if isinstance(value, str):
        if not _DECIMAL.match(value.strip()):
            raise ConfigError(f"{where}: {shown(value)} is not a plain number; pdr_run evaluated it as Python code, "
                              "pdrflow never evaluates input")
        number: float = float(value.strip())
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {shown(value)} is not a finite number")
    if kind is int:
        if not number.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
        return int(number)
    return number


def _fixed_parameters(body: Mapping[str, Any], section: str, config: OldConfig) -> None:
    for key, value in body.items():
        where = f"{section}.{key}"
        if not isinstance(key, str):
            raise ConfigError(f"{section}: a key that is not a name ({shown(key)})")
        if key in ELFRAC_ELEMENTS:
            number = _parameter("sigd", value, where)  # any float parameter: the same checks
            if float(number) < 0:
                raise ConfigError(f"{where}: must be >= 0")
            config.abundances[ELFRAC_ELEMENTS[key]] = float(number)
        elif key in AXIS_PARAMETERS or key == "mass":
            raise ConfigError(f"{where}: set per model by the grid axes (metal, dens, mass, chi), not a fixed value")
        elif key in PARAMETERS_BY_NAME:
            config.parameters[key] = _parameter(key, value, where)
        elif key == "species":
            config.network_species = _species_list(value, where)
        else:
            raise ConfigError(f"{where}: unknown KOSMA-tau parameter")


def _find_template(home: Path, name: str) -> Path | None:
    for sub in TEMPLATE_DIRS:
        candidate = (home / sub / name).resolve()
        if candidate.is_file():
            return candidate
    return None


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value if value else None


def _read_database(body: dict[str, Any] | None, environ: Mapping[str, str], config: OldConfig) -> None:
    values = dict(body or {})
    for key in values:
        if key not in _DB_KEYS:
            raise ConfigError(f"database.{key}: unknown key")
    for env, key in ENV_DB.items():  # pdr_run's DatabaseManager: the environment always wins
        if _env(environ, env) is not None:
            values[key] = environ[env]
            config.notes.append(Note(env, f"overrides database.{key} (as in pdr_run)", matters=False))
    kind = _string(values.get("type", "sqlite"), "database.type").lower()
    password = _env(environ, "PDR_DB_PASSWORD")
    if password is None and values.get("password"):
        password = _string(values["password"], "database.password")
        config.notes.append(Note("database.password", "read from the old config to open its database; never copied "
                                 "(pdrflow reads PDRFLOW_DB_PASSWORD or PDR_DB_PASSWORD only)", matters=False))
    config.db_password = password
    if kind == "sqlite":
        if not values.get("path"):
            raise ConfigError("database.path: required for a SQLite database (pdr_run's default is :memory:, which "
                              "holds nothing to migrate)")
        raw = _string(values["path"], "database.path")
        if raw == ":memory:":
            raise ConfigError("database.path: :memory: holds nothing to migrate")
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path  # pdr_run: relative to the working directory
        if not path.is_file():
            raise ConfigError(f"database.path: {path} does not exist")
        config.database = OldDatabase("sqlite", path=path)
    elif kind in ("mysql", "postgresql"):
        for key in ("host", "database"):
            if not values.get(key):
                raise ConfigError(f"database.{key}: required for a {kind} database")
        username = values.get("username", values.get("user"))
        config.database = OldDatabase(
            kind, host=_string(values["host"], "database.host"), port=_port(values.get("port"), "database.port"),
            username=_string(username, "database.username") if username else None,
            database=_string(values["database"], "database.database"),
        )
    else:
        raise ConfigError(f"database.type: {shown(kind)} is not sqlite, mysql or postgresql")


def _read_storage(body: dict[str, Any] | None, environ: Mapping[str, str], config: OldConfig) -> None:
    values = dict(body or {})
    for key in values:
        if key not in _STORAGE_KEYS:
            raise ConfigError(f"storage.{key}: unknown key")
    if body is None:  # pdr_run takes the storage from the environment only without a storage section
        for env, key in ENV_STORAGE.items():
            if _env(environ, env) is not None:
                values[key] = environ[env]
        if not values:
            raise ConfigError("storage: required section is missing (and no PDR_STORAGE_DIR): where is the archive?")
    else:
        for env in ENV_STORAGE:
            if _env(environ, env) is not None:
                config.notes.append(Note(env, "ignored, as pdr_run ignores it when the config has a storage section",
                                         matters=False))
    kind = _string(values.get("type", "local"), "storage.type").lower()
    if values.get("password"):
        config.notes.append(Note("storage.password", "not copied; set PDRFLOW_SFTP_PASSWORD or PDR_STORAGE_PASSWORD",
                                 matters=False))
    if kind in ("rclone", "ftp"):
        config.notes.append(Note("storage.type", f"{kind} storage has no pdrflow backend (local and sftp only): "
                                 "mount the archive or use its SFTP server", matters=True))
        config.storage = OldStorage("local", "/")
        return
    if kind not in ("local", "sftp"):
        raise ConfigError(f"storage.type: unknown type {shown(kind)}")
    if not values.get("base_dir"):
        raise ConfigError("storage.base_dir: required (the archive directory)")
    root = _string(values["base_dir"], "storage.base_dir")
    for key in ("remote_path_prefix", "mount_point"):
        if values.get(key):
            config.notes.append(Note(f"storage.{key}", "an rclone setting; not used", matters=False))
    if kind == "local":
        path = Path(root).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        config.storage = OldStorage("local", str(path))
        return
    if not root.startswith("/"):
        raise ConfigError("storage.base_dir: must be an absolute directory on the SFTP server")
    if not values.get("host"):
        raise ConfigError("storage.host: required for sftp storage")
    username = values.get("username")
    config.storage = OldStorage("sftp", root.rstrip("/") or "/", host=_string(values["host"], "storage.host"),
                                port=_port(values.get("port"), "storage.port"),
                                username=_string(username, "storage.username") if username else None)


def _read_pdr(body: dict[str, Any], environ: Mapping[str, str], config: OldConfig) -> None:
    for key in body:
        if key not in _PDR_KEYS:
            raise ConfigError(f"pdr.{key}: unknown key")
    for env in ("PDR_BASE_DIR", "PDR_EXEC_PATH"):
        if _env(environ, env) is not None:
            config.notes.append(Note(env, "ignored, as pdr_run ignores it when the config has a pdr section",
                                     matters=False))
    for key in ("model_name", "base_dir", "pdr_file_name", "onion_file_name"):
        if not body.get(key):
            raise ConfigError(f"pdr.{key}: required key is missing")
    config.grid = _string(body["model_name"], "pdr.model_name", _SAFE_NAME, "a grid name (letters, digits, . _ + -)")
    home = Path(_string(body["base_dir"], "pdr.base_dir")).expanduser()
    config.home = home if home.is_absolute() else Path.cwd() / home
    config.pdr_executable = _string(body["pdr_file_name"], "pdr.pdr_file_name", _FILE_NAME, "a file name")
    config.onion_executable = _string(body["onion_file_name"], "pdr.onion_file_name", _FILE_NAME, "a file name")
    config.helpers = [
        _string(body.get(key, default), f"pdr.{key}", _FILE_NAME, "a file name")
        for key, default in (("getctrlind_file_name", "getctrlind"), ("mrt_file_name", "mrt.exe"))
    ]
    if body.get("chem_database"):
        config.chem_rates = _string(body["chem_database"], "pdr.chem_database", _FILE_NAME, "a file name in pdrinpdata")
    else:
        config.notes.append(Note("pdr.chem_database", "not set: pdrflow links pdrinpdata/chem_rates.dat",
                                 matters=False))
    config.chem_origin = _string(body["chem_origin"], "pdr.chem_origin") if body.get("chem_origin") else None
    for key, default, attr in (("pdrinp_template_file", "PDRNEW.INP.template", "pdrnew_template"),
                               ("json_template_file", "pdr_config.json.template", "json_template")):
        name = _string(body.get(key, default), f"pdr.{key}", _FILE_NAME, "a file name")
        found = _find_template(config.home, name)
        if found is None and key in body:
            config.notes.append(Note(f"pdr.{key}", f"{name} not found under {config.home}/{{{','.join(TEMPLATE_DIRS)}}}",
                                     matters=True))
        elif found is None:
            config.notes.append(Note(f"pdr.{key}", f"no {name} found: pdrflow renders its own", matters=False))
        setattr(config, attr, found)
    if body.get("max_walltime_s") is not None:
        value = body["max_walltime_s"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ConfigError(f"pdr.max_walltime_s: expected seconds, got {shown(value)}")
        config.pdr_timeout = float(value)
    for key in ("exe_revision", "compilation_date"):
        if key in body:
            config.notes.append(Note(f"pdr.{key}", "not needed: pdrflow asks the executable and hashes it",
                                     matters=False))


def _read_model_params(section: str, body: dict[str, Any], config: OldConfig) -> None:
    for key in AXIS_KEYS:
        if key not in body:
            raise ConfigError(f"{section}.{key}: required key is missing")
        config.axes[key] = _axis_strings(body[key], f"{section}.{key}")
    if "species" in body:
        config.onion_species = _species_list(body["species"], f"{section}.species")
    else:
        config.notes.append(Note(f"{section}.species", "not set: pdrflow's default onion species", matters=False))
    for key, value in body.items():
        where = f"{section}.{key}"
        if key in AXIS_KEYS or key == "species":
            continue
        if key in ("alpha", "rcore"):
            config.parameters[key] = _parameter(key, value, where)
        elif key == "chemistry":
            config.network_species = _species_list(value, where)
        elif key == "col":
            if _axis_strings(value if isinstance(value, list) else [value], where) not in (["00"], ["0"]):
                config.notes.append(Note(where, "the retired column axis must be 00", matters=True))
        elif key in ("default_species", "reserved_cpus"):
            config.notes.append(Note(where, "not used by pdrflow", matters=False))
        elif key in PARAMETERS_BY_NAME and key not in AXIS_PARAMETERS:
            config.parameters[key] = _parameter(key, value, where)  # pdr_run merges these into the parameters
        else:
            raise ConfigError(f"{where}: unknown key")


def read_old_config(path: Path, environ: Mapping[str, str]) -> OldConfig:
    """Check a pdr_run config and apply the environment as pdr_run would; ConfigError on bad input."""
    path = path.expanduser().absolute()
    document = _load_yaml(path)
    for key in document:
        if key not in _SECTIONS:
            raise ConfigError(f"{str(key)[:60]}: unknown section (pdr_run aborts on it too)")
    config = OldConfig(
        path=path, grid="", home=Path("/"), pdr_executable="", onion_executable="", helpers=[], chem_rates=None,
        chem_origin=None, pdrnew_template=None, json_template=None, pdr_timeout=None, axes={}, onion_species=[],
        network_species=None, parameters={}, abundances={}, database=OldDatabase("sqlite"),
    )
    pdr = _section(document, "pdr")
    assert pdr is not None
    _read_pdr(pdr[1], environ, config)
    model_params = _section(document, "model_params", "model_parameters")
    assert model_params is not None
    _read_model_params(model_params[0], model_params[1], config)
    fixed = _section(document, "non_default_params", "non_default_parameters", required=False)
    if fixed is not None:
        _fixed_parameters(fixed[1], fixed[0], config)
    database = _section(document, "database", required=False)
    if database is None and not any(_env(environ, env) for env in ENV_DB):
        raise ConfigError("database: required section is missing (and no PDR_DB_* variables)")
    _read_database(database[1] if database else None, environ, config)
    storage = _section(document, "storage", required=False)
    _read_storage(storage[1] if storage else None, environ, config)
    user = _section(document, "user", required=False)
    if user is not None:
        config.user = {str(k): str(v) for k, v in user[1].items() if isinstance(v, str | int | float)}
    for key in ("simline", "uv_continuum"):
        body = _section(document, key, required=False)
        if body is not None and body[1].get("enabled"):
            config.notes.append(Note(f"{key}.enabled", "post-processing pdrflow does not run (it changes or adds "
                                     "archived files)", matters=True))
    if "directories" in document:
        config.notes.append(Note("directories", "pdrflow uses the contract's fixed directory names", matters=False))
    return config
