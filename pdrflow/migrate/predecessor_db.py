"""Reading the predecessor's (pdr_run's) job database: every model it knows, newest job per name.

Only read: SQLAlchemy Core ``text()`` queries through its URL, so SQLite, MySQL and PostgreSQL work
alike. The tables and columns are pdr_run's (``database/db_manager.py`` there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from ..kosma.parameters import PARAMETERS_BY_NAME, ParamValue
from .predecessor import ELFRAC_ELEMENTS, OldDatabase


@dataclass(frozen=True)
class RecordedFile:
    sha256: str | None
    size: int | None


@dataclass
class OldModel:
    """One model as the predecessor's database records it (the newest job of that name)."""

    job_id: int
    name: str
    status: str
    onion_species: list[str]
    parameters: dict[str, ParamValue]  # every KOSMA-tau parameter column present, by pdrflow name
    mass: float | None
    network_species: list[str] | None
    elements: dict[str, float]
    recorded: dict[str, RecordedFile]  # archive file name (pdr<J>.hdf ...) -> what pdr_run recorded
    with_mcdrt: bool
    provenance: dict[str, Any]
    earlier_jobs: int = 0  # older job rows of the same name (pdr_run inserts one per rerun)


def _iso(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _columns(connection: Any, table: str) -> set[str]:
    from sqlalchemy import inspect

    inspector = inspect(connection)
    if not inspector.has_table(table):
        return set()
    return {column["name"] for column in inspector.get_columns(table)}


def _typed(name: str, value: object) -> ParamValue | None:
    if value is None:
        return None
    kind = PARAMETERS_BY_NAME[name].kind
    try:
        if kind is str:
            return str(value)
        if kind is int:
            return int(value)  # type: ignore[call-overload, no-any-return]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _rows(connection: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    from sqlalchemy import bindparam, text

    statement = text(sql)
    for key, value in params.items():
        if isinstance(value, list | tuple):
            statement = statement.bindparams(bindparam(key, expanding=True))
    return [dict(row._mapping) for row in connection.execute(statement, params)]


def _by_id(connection: Any, table: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    if not ids or not _columns(connection, table):
        return {}
    found: dict[int, dict[str, Any]] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), 500):  # bounded IN lists for every backend
        for row in _rows(connection, f"SELECT * FROM {table} WHERE id IN :ids", ids=unique[start:start + 500]):
            found[int(row["id"])] = row
    return found


_REQUIRED_TABLES = ("pdr_model_jobs", "model_names", "kosmatau_parameters")


def read_old_models(database: OldDatabase, password: str | None, grid: str) -> list[OldModel]:
    """Every model of the grid the predecessor's database knows, newest job per name. ConfigError if unreadable."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(database.url(password))
    try:
        with engine.connect() as connection:
            missing = [table for table in _REQUIRED_TABLES if not _columns(connection, table)]
            if missing:
                raise ConfigError(f"database: {database.describe()} is not a pdr_run database (no table "
                                  f"{missing[0]})")
            return _read_models(connection, grid)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigError(f"database: cannot read the predecessor's database {database.describe()}: "
                          f"{reason[0] if reason else type(exc).__name__}") from None
    finally:
        engine.dispose()


def _read_models(connection: Any, grid: str) -> list[OldModel]:
    grid_ids = [int(r["id"]) for r in _rows(connection, "SELECT id FROM model_names WHERE model_name = :name",
                                             name=grid)]
    if not grid_ids:
        return []
    jobs = _rows(connection, "SELECT * FROM pdr_model_jobs WHERE model_name_id IN :ids ORDER BY id", ids=grid_ids)
    newest: dict[str, dict[str, Any]] = {}
    earlier: dict[str, int] = {}
    for job in jobs:
        name = str(job["model_job_name"])
        current = newest.get(name)
        # A finished job beats a later rerun that did not finish; among equals the newest wins.
        if current is None or (job.get("status") == "finished") >= (current.get("status") == "finished"):
            if current is not None:
                earlier[name] = earlier.get(name, 0) + 1
            newest[name] = job
        else:
            earlier[name] = earlier.get(name, 0) + 1
    chosen = list(newest.values())
    parameters = _by_id(connection, "kosmatau_parameters", [j["kosmatau_parameters_id"] for j in chosen
                                                             if j.get("kosmatau_parameters_id") is not None])
    executables = _by_id(connection, "kosmatau_executables", [j["kosmatau_executable_id"] for j in chosen
                                                               if j.get("kosmatau_executable_id") is not None])
    chem = _by_id(connection, "chemical_databases", [j["chemical_database_id"] for j in chosen
                                                     if j.get("chemical_database_id") is not None])
    users = _by_id(connection, "users", [j["user_id"] for j in chosen if j.get("user_id") is not None])
    hdf_by_job: dict[int, dict[str, Any]] = {}
    hdf_by_name: dict[str, dict[str, Any]] = {}
    if _columns(connection, "hdf_files"):
        for row in _rows(connection, "SELECT * FROM hdf_files WHERE model_name_id IN :ids ORDER BY id", ids=grid_ids):
            if row.get("job_id") is not None:
                hdf_by_job[int(row["job_id"])] = row
            hdf_by_name[str(row.get("file_name"))] = row  # pdr_run shares one record between identical outputs
    json_by_job: dict[int, dict[str, Any]] = {}
    if "job_id" in _columns(connection, "json_files"):
        ids = [int(j["id"]) for j in chosen]
        for start in range(0, len(ids), 500):
            for row in _rows(connection, "SELECT * FROM json_files WHERE job_id IN :ids ORDER BY id",
                             ids=ids[start:start + 500]):
                json_by_job[int(row["job_id"])] = row
    models: list[OldModel] = []
    for job in chosen:
        models.append(_model(job, parameters, executables, chem, users, hdf_by_job, hdf_by_name, json_by_job,
                             earlier.get(str(job["model_job_name"]), 0)))
    return models


def _model(
    job: dict[str, Any], parameters: dict[int, dict[str, Any]], executables: dict[int, dict[str, Any]],
    chem: dict[int, dict[str, Any]], users: dict[int, dict[str, Any]], hdf_by_job: dict[int, dict[str, Any]],
    hdf_by_name: dict[str, dict[str, Any]], json_by_job: dict[int, dict[str, Any]], earlier: int,
) -> OldModel:
    name = str(job["model_job_name"])
    row = parameters.get(job.get("kosmatau_parameters_id") or -1, {})
    values: dict[str, ParamValue] = {}
    for key in PARAMETERS_BY_NAME:
        typed = _typed(key, row.get(key))
        if typed is not None:
            values[key] = typed
    elements = {element: float(row[column]) for column, element in ELFRAC_ELEMENTS.items()
                if row.get(column) is not None}
    network = str(row["species"]).split() if row.get("species") else None
    onion = str(job.get("onion_species") or "").split()
    hdf = hdf_by_job.get(int(job["id"])) or hdf_by_name.get(f"pdr{name}.hdf") or {}
    recorded: dict[str, RecordedFile] = {}
    for suffix, target in (("", f"pdr{name}.hdf"), ("_hdf5_s", f"pdrstruct{name}.hdf5"),
                           ("_hdf5_c", f"pdrchem{name}.hdf5")):
        digest = hdf.get(f"sha256_sum{suffix}")
        size = hdf.get(f"file_size{suffix}")
        if digest:
            recorded[target] = RecordedFile(str(digest).lower(), int(size) if size is not None else None)
    json_row = json_by_job.get(int(job["id"]))
    if json_row and json_row.get("sha256_sum"):
        recorded[f"pdr_config{name}.json"] = RecordedFile(str(json_row["sha256_sum"]).lower(), None)
    exe = executables.get(job.get("kosmatau_executable_id") or -1, {})
    chem_row = chem.get(job.get("chemical_database_id") or -1, {})
    user = users.get(job.get("user_id") or -1, {})
    provenance = {
        "job_id": int(job["id"]),
        "model_job_name": name,
        "status": job.get("status"),
        "time_of_start": _iso(job.get("time_of_start")),
        "time_of_finish": _iso(job.get("time_of_finish")),
        "time_created": _iso(job.get("time_created")),
        "executable": {
            "file_name": exe.get("executable_file_name"), "revision": exe.get("code_revision"),
            "sha256": exe.get("sha256_sum"), "compilation_date": _iso(exe.get("compilation_date")),
            "path": exe.get("executable_full_path"),
        } if exe else None,
        "chem_database": {"file": chem_row.get("chem_rates_file_name"), "origin": chem_row.get("database_origin"),
                          "path": chem_row.get("chem_rates_full_path")} if chem_row else None,
        "user": {"username": user.get("username"), "email": user.get("email")} if user else None,
        "onion_species": onion,
        "kosmatau_parameters_id": job.get("kosmatau_parameters_id"),
        "output_directory": job.get("output_directory"),  # where it was then (the paths are often stale)
    }
    mcdrt_recorded = "output_mcdrt_zip_file" not in job or job.get("output_mcdrt_zip_file") is not None
    return OldModel(
        job_id=int(job["id"]), name=name, status=str(job.get("status") or ""), onion_species=onion,
        parameters=values, mass=float(row["mass"]) if row.get("mass") is not None else None,
        network_species=network, elements=elements, recorded=recorded, with_mcdrt=mcdrt_recorded,
        provenance=provenance, earlier_jobs=earlier,
    )
