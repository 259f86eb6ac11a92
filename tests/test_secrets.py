"""Secrets and file permissions.

Canary passwords in PDRFLOW_DB_PASSWORD / PDRFLOW_SFTP_PASSWORD must appear nowhere pdrflow
writes: stdout, stderr (with -v debug logging), log files, any ledger table, any file in the run
directory, archive or scratch, exception text. Checked on a real end-to-end SQLite grid, on a real
PostgreSQL with a password-authenticated role, and on the error paths that use the secrets
(database refusing the connection or the password, SFTP refusing the connection or the password
on a real sshd). Plus: a new SQLite ledger is 0600 (its -wal/-shm too), and the package holds
no eval/exec, no shell=True and no unsafe YAML loader.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config, cli, files_under, write_config

import pdrflow

DB_CANARY = "canary-DbPw-4c7e1d"
SFTP_CANARY = "canary-SftpPw-a93b02"
WRONG_CANARY = "canary-WrongPw-77f0aa"
CANARIES = (DB_CANARY, SFTP_CANARY, WRONG_CANARY)
PACKAGE = Path(pdrflow.__file__).parent


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Both passwords set to canaries; a home without ~/.ssh, no agent; TMPDIR inside the test dir."""
    home = tmp_path / "home"
    home.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"HOME": str(home), "SSH_AUTH_SOCK": "", "TMPDIR": str(tmp),
            "PDRFLOW_DB_PASSWORD": DB_CANARY, "PDRFLOW_SFTP_PASSWORD": SFTP_CANARY,
            "PDR_DB_PASSWORD": "", "PDR_STORAGE_PASSWORD": ""}


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released: connecting is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sqlite_dump(db: Path) -> str:
    """Every row of every table, as text."""
    # closing(): sqlite3's own context manager commits but does not close, and a connection
    # closed later by the garbage collector removes -shm while other checks walk the directory.
    with closing(sqlite3.connect(db)) as connection:
        tables = [row[0] for row in connection.execute("select name from sqlite_master where type='table'")]
        assert tables, "the ledger has no tables"
        return "\n".join(f"{t}: {connection.execute(f'select * from {t}').fetchall()!r}" for t in tables)


def sqlalchemy_dump(url: str) -> str:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
            assert tables, "the ledger has no tables"
            return "\n".join(
                f"{t}: {connection.execute(text(f'select * from {t}')).fetchall()!r}" for t in tables
            )
    finally:
        engine.dispose()


def assert_no_canary(texts: list[str], *roots: Path) -> None:
    """No canary in any text, nor in any file below the roots (ledgers, logs, archive, scratch)."""
    for secret in CANARIES:
        for text in texts:
            assert secret not in text
        for root in roots:
            for path in files_under(root):
                assert secret.encode() not in path.read_bytes(), path


def test_sqlite_end_to_end_with_debug_logging_leaks_no_canary(
    tmp_path: Path, null_home: Path, env: dict[str, str]
) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", base_config(run_dir, home=null_home))
    done = cli("-v", "run", str(config), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DEBUG" in done.stderr  # debug logging was really on: there is something to search
    shown = [cli(*args, env=env) for args in (("status", str(config), "--json"), ("verify", str(config), "--json"),
                                               ("show", str(config), "100_30_-10_10_00", "--json"))]
    assert [s.returncode for s in shown] == [0, 0, 0]
    ledger = run_dir / "ledger.sqlite"
    dump = sqlite_dump(ledger)
    assert "100_30_-10_10_00" in dump
    assert len(files_under(run_dir / "archive")) > 0
    assert_no_canary([done.stdout, done.stderr, dump, *(s.stdout + s.stderr for s in shown)], tmp_path)
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600


# ---- the database password on error paths ------------------------------------------------------


def _pg_config(tmp_path: Path, home: Path, url: str) -> Path:
    return write_config(tmp_path / "pg.yaml", base_config(tmp_path / "run", home=home, database={"url": url}))


def test_postgresql_connection_refused_leaks_no_canary(tmp_path: Path, null_home: Path, env: dict[str, str]) -> None:
    config = _pg_config(tmp_path, null_home, f"postgresql+psycopg://pdrflow@127.0.0.1:{closed_port()}/pdrflow")
    done = cli("-v", "run", str(config), env=env, timeout=120)
    assert done.returncode != 0
    assert "Connection refused" in done.stderr or "connection refused" in done.stderr.lower()
    assert_no_canary([done.stdout, done.stderr], tmp_path)
    assert not (tmp_path / "run" / "archive").exists() and not (tmp_path / "run" / "scratch").exists()


def test_database_exception_text_holds_no_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The exception pdrflow gets from SQLAlchemy, formatted in full, never holds the password."""
    from pdrflow.config import DatabaseConfig, load_config
    from pdrflow.ledger import Ledger

    monkeypatch.setenv("PDRFLOW_DB_PASSWORD", DB_CANARY)
    config = base_config(tmp_path, home=tmp_path,
                         database={"url": f"postgresql+psycopg://pdrflow@127.0.0.1:{closed_port()}/x"})
    config["kosma_tau"] = {"standin": True}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    assert isinstance(loaded.database, DatabaseConfig)
    assert loaded.database.sqlalchemy_url().password == DB_CANARY  # it is really there to leak
    for text in (repr(loaded), str(loaded.database), repr(loaded.database.sqlalchemy_url()),
                 str(loaded.database.sqlalchemy_url()), json.dumps(loaded.model_dump(mode="json"))):
        assert DB_CANARY not in text
    with pytest.raises(Exception) as caught:
        Ledger(loaded.database.sqlalchemy_url(), patience=0.5)
    assert DB_CANARY not in "".join(traceback.format_exception(caught.value))
    assert DB_CANARY not in repr(caught.value.args)


def test_pickled_configs_carry_no_password_and_take_it_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Configs are pickled to the scheduler and the workers (and distributed logs its messages at
    debug level): the password stays out of the bytes and is read from the receiver's environment."""
    import pickle

    import cloudpickle

    from pdrflow.config import load_config

    monkeypatch.setenv("PDRFLOW_DB_PASSWORD", DB_CANARY)
    monkeypatch.setenv("PDRFLOW_SFTP_PASSWORD", SFTP_CANARY)
    config = base_config(tmp_path, home=None, database={"url": "postgresql+psycopg://pdrflow@127.0.0.1:9/x"})
    config["storage"] = {"kind": "sftp", "host": "127.0.0.1", "root": "/srv/archive"}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    for data in (pickle.dumps(loaded), cloudpickle.dumps(loaded), pickle.dumps(loaded.database)):
        assert DB_CANARY.encode() not in data and SFTP_CANARY.encode() not in data
    received = pickle.loads(pickle.dumps(loaded))
    assert received == loaded
    assert received.database.sqlalchemy_url().password == DB_CANARY
    assert received.storage.password.get_secret_value() == SFTP_CANARY  # type: ignore[union-attr]
    monkeypatch.setenv("PDRFLOW_DB_PASSWORD", "")
    assert pickle.loads(pickle.dumps(loaded.database)).password is None  # nothing but the environment


def test_unreachable_database_is_exit_2_with_one_line(tmp_path: Path, null_home: Path, env: dict[str, str]) -> None:
    config = _pg_config(tmp_path, null_home, f"postgresql+psycopg://pdrflow@127.0.0.1:{closed_port()}/pdrflow")
    for command in ("run", "status", "show", "db"):
        args = ["db", "current", str(config)] if command == "db" else [command, str(config)]
        if command == "show":
            args.append("100_30_-10_10_00")
        done = cli(*args, env=env, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "database" in done.stderr, (command, done.stderr)
        assert DB_CANARY not in done.stdout + done.stderr


# ---- a real PostgreSQL with a password-authenticated role ----------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    from services.databases import remove_server, start_server  # require(): in CI a missing server fails

    server = start_server("postgresql")
    try:
        yield server
    finally:
        remove_server(server)


def test_postgresql_end_to_end_and_wrong_password_leak_no_canary(
    tmp_path: Path, null_home: Path, env: dict[str, str], postgres: Any
) -> None:
    from services.databases import APP_PASSWORD

    assert APP_PASSWORD.startswith("canary-")
    postgres.reset()
    config = _pg_config(tmp_path, null_home, postgres.url)
    done = cli("-v", "run", str(config), env={**env, "PDRFLOW_DB_PASSWORD": APP_PASSWORD})
    assert done.returncode == 0, done.stdout + done.stderr
    status = cli("status", str(config), "--json", env={**env, "PDRFLOW_DB_PASSWORD": APP_PASSWORD})
    assert json.loads(status.stdout)["counts"] == {"archived": 4}
    dump = sqlalchemy_dump(postgres.url_with_password)
    assert "100_30_-10_10_00" in dump

    wrong = cli("-v", "run", str(config), env={**env, "PDRFLOW_DB_PASSWORD": WRONG_CANARY}, timeout=120)
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr
    texts = [done.stdout, done.stderr, status.stdout, status.stderr, dump, wrong.stdout, wrong.stderr]
    assert_no_canary(texts, tmp_path)
    for text in texts:
        assert APP_PASSWORD not in text
    for path in files_under(tmp_path):
        assert APP_PASSWORD.encode() not in path.read_bytes(), path


# ---- the SFTP password on error paths ----------------------------------------------------------


def _sftp_config(tmp_path: Path, home: Path, port: int, known_hosts: Path) -> Path:
    storage = {"kind": "sftp", "host": "127.0.0.1", "port": port, "username": "root", "root": "/srv/pdrflow-never",
               "known_hosts": str(known_hosts), "connect_timeout": 3, "operation_timeout": 5, "files_in_flight": 2}
    return write_config(tmp_path / "sftp.yaml", base_config(tmp_path / "run", home=home, storage=storage,
                                                            run={"archive_attempts": 1}))


def _refused_by_the_preflight(done: subprocess.CompletedProcess[str], db: Path) -> list[str]:
    """The archive cannot be reached: the run is refused before any model (exit 2), the reason on stderr,
    and the ledger holds no attempt. Returns the texts to search for the canary."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "preflight" in done.stderr and "nothing was run" in done.stderr, done.stderr
    texts = [done.stdout, done.stderr]
    if db.exists():
        texts.append(sqlite_dump(db))
        with closing(sqlite3.connect(db)) as connection:
            assert connection.execute("select count(*) from attempts").fetchone() == (0,)
    return texts


def test_sftp_connection_refused_leaks_no_canary(tmp_path: Path, null_home: Path, env: dict[str, str]) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    config = _sftp_config(tmp_path, null_home, closed_port(), known)
    done = cli("-v", "run", str(config), env=env)
    texts = _refused_by_the_preflight(done, tmp_path / "run" / "ledger.sqlite")
    assert "refused" in done.stderr.lower(), done.stderr
    assert_no_canary(texts, tmp_path)


@pytest.mark.services
def test_sftp_wrong_password_on_a_real_sshd_leaks_no_canary(
    tmp_path: Path, null_home: Path, env: dict[str, str]
) -> None:
    from services.sshd import Sshd  # require_sshd(): in CI a missing sshd fails

    with Sshd(workdir=tmp_path / "sshd", password_authentication=True) as server:
        config = _sftp_config(tmp_path, null_home, server.port, server.write_known_hosts(tmp_path / "known_hosts"))
        done = cli("-v", "run", str(config), env={**env, "PDRFLOW_SFTP_PASSWORD": WRONG_CANARY})
        texts = _refused_by_the_preflight(done, tmp_path / "run" / "ledger.sqlite")
    assert "PDRFLOW_SFTP_PASSWORD" in done.stderr, done.stderr  # the reason names the variable, never its value
    assert_no_canary(texts, tmp_path / "run", tmp_path / "tmp", tmp_path / "home")
    # sshd's own log is not pdrflow's, but it must not have received the password in a username either
    assert WRONG_CANARY not in (tmp_path / "sshd" / "sshd.log").read_text()


# ---- file permissions ---------------------------------------------------------------------------


def test_new_sqlite_ledger_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    from sqlalchemy import text

    from pdrflow.ledger.ledger import make_engine

    old = os.umask(0o022)  # the usual umask: without pdrflow's care the ledger would be 0644
    try:
        db = tmp_path / "ledger.sqlite"
        engine = make_engine(f"sqlite:///{db}")
        try:
            with engine.connect() as connection:  # held open: SQLite keeps -wal and -shm while connected
                connection.execute(text("create table t (x text)"))
                connection.execute(text("insert into t values ('x')"))
                connection.commit()
                modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        finally:
            engine.dispose()
    finally:
        os.umask(old)
    assert modes == {"ledger.sqlite": 0o600, "ledger.sqlite-wal": 0o600, "ledger.sqlite-shm": 0o600}


def test_existing_ledger_permissions_are_left_alone(tmp_path: Path) -> None:
    from sqlalchemy import text

    from pdrflow.ledger.ledger import make_engine

    db = tmp_path / "shared.sqlite"
    sqlite3.connect(db).close()
    db.chmod(0o640)  # a group-shared ledger the user set up on purpose
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as connection:
        connection.execute(text("select 1"))
    engine.dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


# ---- no eval, no shell, no unsafe YAML in the package ------------------------------------------


def _resolve(module: str, node: ast.expr) -> object:
    """The object an ast Name/Attribute refers to in an imported module (None when unknown)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    obj: object = importlib.import_module(module)
    for name in [node.id, *reversed(parts)]:
        obj = getattr(obj, name, None)
    return obj


def _package_sources() -> list[tuple[str, Path]]:
    sources = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        sources.append((module, path))
    assert len(sources) > 20
    return sources


def unsafe_calls(sources: list[tuple[str, Path]]) -> list[str]:
    """eval/exec/compile, os.system/popen, shell=..., and yaml loading without a SafeLoader subclass."""
    problems: list[str] = []
    for module, path in sources:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.name}:{node.lineno}"
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}: {name}()")
            if name == "system" or (name.startswith("popen") and isinstance(func, ast.Attribute)
                                    and isinstance(func.value, ast.Name) and func.value.id == "os"):
                problems.append(f"{where}: os.{name}()")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value,
                                                              ast.Constant) and keyword.value.value is False):
                    problems.append(f"{where}: shell={ast.unparse(keyword.value)}")
            if name in ("unsafe_load", "unsafe_load_all", "full_load", "full_load_all"):
                problems.append(f"{where}: yaml.{name}()")
            if name in ("load", "load_all") and isinstance(func, ast.Attribute) and ast.unparse(func.value) == "yaml":
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if loader is None and len(node.args) > 1:
                    loader = node.args[1]
                resolved = _resolve(module, loader) if loader is not None else None
                if not (isinstance(resolved, type) and issubclass(resolved, yaml.SafeLoader)):
                    problems.append(f"{where}: yaml.{name}() without a SafeLoader")
    return problems


def test_package_has_no_eval_exec_shell_or_unsafe_yaml() -> None:
    assert unsafe_calls(_package_sources()) == []


def test_the_static_check_catches_what_it_looks_for(tmp_path: Path) -> None:
    """The same check over a planted module finds each kind of problem, and passes a SafeLoader subclass."""
    module = tmp_path / "planted_bad.py"
    module.write_text(
        "import os, subprocess, yaml\n"
        "class Strict(yaml.SafeLoader):\n    pass\n"
        "def f():\n"
        "    eval('1')\n    exec('x = 1')\n    os.system('true')\n    subprocess.run('true', shell=True)\n"
        "    yaml.load('a: 1', Loader=yaml.Loader)\n    yaml.load('a: 1')\n    yaml.unsafe_load('a: 1')\n"
        "    yaml.load('a: 1', Loader=Strict)\n    yaml.safe_load('a: 1')\n    subprocess.run(['true'], shell=False)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        found = unsafe_calls([("planted_bad", module)])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("planted_bad", None)
    assert found == [
        "planted_bad.py:5: eval()", "planted_bad.py:6: exec()", "planted_bad.py:7: os.system()",
        "planted_bad.py:8: shell=True", "planted_bad.py:9: yaml.load() without a SafeLoader",
        "planted_bad.py:10: yaml.load() without a SafeLoader", "planted_bad.py:11: yaml.unsafe_load()",
    ]
