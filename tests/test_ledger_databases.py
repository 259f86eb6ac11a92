"""The ledger on real SQLite, PostgreSQL and MariaDB servers: end to end, migrations, concurrency, outages."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import base_config, cli, status, verify, write_config
from services.databases import APP_PASSWORD, DatabaseServer, remove_server, start_server
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from pdrflow.config import load_config
from pdrflow.errors import LedgerError
from pdrflow.grid import Identity, expand_grid
from pdrflow.ledger import JobState, Ledger
from pdrflow.ledger.ledger import make_engine
from pdrflow.ledger.migrate import SCHEMA_REVISION, upgrade
from pdrflow.ledger.schema import Base
from pdrflow.storage import StoredFile

BACKENDS = ["sqlite", "postgresql", "mariadb"]
MODELS = 4


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, DatabaseServer]]:
    started: dict[str, DatabaseServer] = {}
    try:
        for kind in ("postgresql", "mariadb"):
            started[kind] = start_server(kind)
        yield started
    finally:
        for server in started.values():
            remove_server(server)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """(url for the config, url with password for direct checks, server or None) on an empty database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        yield {"kind": "sqlite", "url": url, "direct": url, "server": None}
        return
    server: DatabaseServer = request.getfixturevalue("servers")[request.param]
    server.reset()
    monkeypatch.setenv("PDRFLOW_DB_PASSWORD", APP_PASSWORD)
    yield {"kind": request.param, "url": server.url, "direct": server.url_with_password, "server": server}


def _count(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def _no_canary_in_ledger(url: str) -> None:
    for query in (
        f"select count(*) from jobs where reason like '%{APP_PASSWORD}%'",
        f"select count(*) from attempts where error like '%{APP_PASSWORD}%'",
    ):
        assert _count(url, query) == 0


def test_end_to_end_grid_on_each_backend(tmp_path: Path, null_home: Path, database: dict) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home, database={"url": database["url"]}))
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert APP_PASSWORD not in done.stdout + done.stderr
    report = status(config)
    assert report["counts"] == {"archived": MODELS}
    assert _count(database["direct"], "select count(*) from archived_files") == MODELS * 37
    assert verify(config)["returncode"] == 0
    again = cli("run", str(config))
    assert again.returncode == 0 and status(config)["attempts"]["model"] == MODELS
    _no_canary_in_ledger(database["direct"])
    if database["kind"] == "sqlite":
        assert APP_PASSWORD.encode() not in (tmp_path / "ledger.sqlite").read_bytes()


def test_schema_from_migrations_matches_the_models(database: dict) -> None:
    engine = make_engine(database["direct"])
    try:
        upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_migration_from_the_previous_revision_keeps_the_data(
    tmp_path: Path, null_home: Path, database: dict
) -> None:
    engine = make_engine(database["direct"])
    try:
        upgrade(engine, "0001")
        with engine.begin() as connection:
            connection.execute(text("insert into grids (name, created_at) values ('testgrid', CURRENT_TIMESTAMP)"))
    finally:
        engine.dispose()
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home, database={"url": database["url"]}))
    refused = cli("run", str(config))
    assert refused.returncode == 2
    assert "schema is at revision 0001 but this pdrflow needs" in refused.stderr
    assert "pdrflow db upgrade" in refused.stderr
    assert cli("db", "upgrade", str(config)).returncode == 0
    assert cli("db", "current", str(config)).stdout.startswith(f"ledger schema: {SCHEMA_REVISION}")
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _count(database["direct"], "select count(*) from grids") == 1  # the old row was kept and used


def test_concurrent_archival_commits_lose_and_duplicate_nothing(tmp_path: Path, null_home: Path, database: dict) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", base_config(tmp_path, home=null_home)))
    grid = config.grid.model_copy(update={"density": [float(10**k) for k in range(2, 7)],
                                          "fuv": [float(10**k) for k in range(10)]})
    identity = Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)
    specs = list(expand_grid(config.model_copy(update={"grid": grid}), identity))
    assert len(specs) == 50
    setup = Ledger(database["direct"])
    setup.register_grid("g", specs)
    jobs = setup.jobs("g")
    for job in jobs:
        attempt = setup.start_model(job.id, "h", None).attempt_id
        setup.finish_model(job.id, attempt, error=None, staged_dir="/s", host="h", provenance={})
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def archive(job_id: int, name: str) -> None:
        ledger = Ledger(database["direct"], create=False)  # its own engine, like a worker process
        try:
            attempt = ledger.start_archive(job_id, "h", None).attempt_id
            files = [StoredFile(f"g/pdrgrid/{kind}{name}", 10, f"{job_id:064x}") for kind in ("a", "b", "c")]
            barrier.wait(timeout=60)
            ledger.commit_archive(job_id, attempt, files)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=archive, args=(job.id, job.name)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert {job.state for job in setup.jobs("g")} == {JobState.ARCHIVED}
    assert _count(database["direct"], "select count(*) from archived_files") == 150
    assert _count(database["direct"], "select count(distinct path) from archived_files") == 150
    assert _count(database["direct"], "select count(*) from attempts where kind='archive' and outcome='ok'") == 50
    setup.close()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_database_restarted_during_a_run_archives_every_job_exactly_once(
    tmp_path: Path, null_home: Path, database: dict
) -> None:
    server: DatabaseServer = database["server"]
    slow_home = tmp_path / "slow-home"
    subprocess.run(["cp", "-a", str(null_home), str(slow_home)], check=True, timeout=30)
    pdr = slow_home / "pdrexe"
    pdr.write_text(pdr.read_text().replace('echo "null pdrexe: not KOSMA-tau"', "sleep 1"))
    config = base_config(tmp_path, home=slow_home, database={"url": database["url"]})
    config["grid"]["fuv"] = [1.0, 10.0, 100.0, 1000.0]
    path = write_config(tmp_path / "run.yaml", config)
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and driver.poll() is None
        try:
            if _count(database["direct"], "select count(*) from jobs where state='archived'") >= 2:
                break
        except DBAPIError:  # the schema may not exist yet
            pass
        time.sleep(0.2)
    server.stop()  # the database goes away in the middle of the grid
    time.sleep(4)
    server.start()
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert APP_PASSWORD not in output
    total = 2 * 4
    assert _count(database["direct"], "select count(*) from jobs where state='archived'") == total
    assert _count(database["direct"], "select count(*) from archived_files") == total * 37
    assert _count(database["direct"], "select count(distinct path) from archived_files") == total * 37
    assert _count(database["direct"], "select count(*) from attempts where kind='archive' and outcome='ok'") == total
    assert verify(path)["returncode"] == 0


def test_out_of_date_schema_is_refused_by_the_ledger(database: dict) -> None:
    engine = make_engine(database["direct"])
    try:
        upgrade(engine, "0001")
    finally:
        engine.dispose()
    with pytest.raises(LedgerError, match="run `pdrflow db upgrade CONFIG`"):
        Ledger(database["direct"])


def test_dashboard_reads_each_backend_through_a_read_only_session(
    tmp_path: Path, null_home: Path, database: dict
) -> None:
    """The dashboard page's engine sees the grid, and the server itself refuses a write through it."""
    from pdrflow.dashboard.queries import read_only_engine, snapshot

    config = load_config(write_config(tmp_path / "c.yaml",
                                      base_config(tmp_path, home=null_home, database={"url": database["url"]})))
    ledger = Ledger(database["direct"])
    try:
        ledger.register_grid(config.grid.name, expand_grid(config, Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)))
    finally:
        ledger.close()
    engine = read_only_engine(config.database)
    try:
        page = snapshot(engine, config.grid.name)
        assert page["found"] and page["total"] == MODELS and page["counts"]["pending"] == MODELS
        with pytest.raises(DBAPIError, match="(?i)read.only|readonly"), engine.begin() as connection:
            connection.execute(text("update jobs set state = 'archived'"))
    finally:
        engine.dispose()
    assert _count(database["direct"], "select count(*) from jobs where state = 'pending'") == MODELS
