"""Canaries on the paths secrets take to a run's other processes (issue 13).

The run's TLS key (``cluster.security: tls``) and the passwords in ``PDRFLOW_DB_PASSWORD`` /
``PDRFLOW_SFTP_PASSWORD`` must reach only the processes that need them:

- on a LocalCluster the key stays in memory: no PEM key text in stdout/stderr (debug logging),
  the log, the ledger, the archive or scratch;
- for SLURMCluster worker jobs the key is written to a fresh 0700 directory, each file 0600, and
  the job script only names those files: the submitted script (as slurmctld holds it) carries
  no key text and no password; the key's own lines never appear in the output, the log, the
  worker logs, the ledger or the archive, and the directory is gone after the run;
- a worker job of a grid whose ledger is SQLite does not need the database password, and its
  processes do not have it.

The SLURM test has "slurm" in its name: it shares a test worker with test_slurm.py (conftest).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psutil
import pytest
from helpers import base_config, files_under, ledger_rows, wait_for, write_config
from services.slurm import Slurm, start_slurm

DB_CANARY = "canary-DbPw-paths-5b1e"
SFTP_CANARY = "canary-SftpPw-paths-0c9d"
PASSWORD_VARIABLES = ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD")


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    cluster = start_slurm()
    yield cluster
    cluster.stop()


def run_env(tmp_path: Path, **more: str) -> dict[str, str]:
    tmp = tmp_path / "tmp"  # the run's temporary files, below the tree searched for leaks
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PDRFLOW_DB_PASSWORD": DB_CANARY, "PDRFLOW_SFTP_PASSWORD": SFTP_CANARY,
            "PDR_DB_PASSWORD": "", "PDR_STORAGE_PASSWORD": "", "TMPDIR": str(tmp), **more}


def start_verbose_run(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``pdrflow -v run`` (debug logging: the most there is to leak) in a session of its own."""
    return subprocess.Popen([sys.executable, "-m", "pdrflow", "-v", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL)


def finish(driver: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    try:
        output, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, 9)
        output, _ = driver.communicate()
        raise AssertionError(f"the run did not finish:\n{output[-3000:]}") from None
    return driver.returncode, output


def ledger_dump(db: Path) -> str:
    with closing(sqlite3.connect(db)) as connection:
        tables = [row[0] for row in connection.execute("select name from sqlite_master where type='table'")]
        return "\n".join(f"{t}: {connection.execute(f'select * from {t}').fetchall()!r}" for t in tables)


def key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM private key: what a leak would show even without the BEGIN/END lines."""
    body = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)-----END", pem, re.S)
    assert body is not None, "no private key in the credentials file"
    lines = [line for line in body.group(1).splitlines() if len(line) >= 40]
    assert lines
    return lines


def assert_nowhere(needles: list[str], texts: list[str], root: Path) -> None:
    for needle in needles:
        for text in texts:
            assert needle not in text, needle
        for path in files_under(root):
            if not path.is_symlink():
                assert needle.encode() not in path.read_bytes(), (needle, path)


# ---- LocalCluster: the key never leaves memory ---------------------------------------------------


@pytest.mark.timeout(180)
def test_local_cluster_tls_key_and_passwords_appear_in_no_output_log_ledger_or_archive(tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=None))
    code, output = finish(start_verbose_run(config, run_env(tmp_path)))
    assert code == 0, output[-3000:]
    assert "DEBUG" in output  # debug logging was on: there is something to search
    assert len(files_under(tmp_path / "archive")) > 20
    dump = ledger_dump(tmp_path / "ledger.sqlite")
    assert "100_30_-10_10_00" in dump
    assert_nowhere(["PRIVATE KEY", DB_CANARY, SFTP_CANARY], [output, dump], tmp_path)
    assert not list(tmp_path.rglob("*pdrflow-tls-*")), "credentials written to disk"


# ---- SLURMCluster: key files for the worker jobs, job scripts, the jobs' environment ---------------


def _slurm_config(tmp_path: Path) -> Path:
    cluster = {"kind": "slurm", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00",
               "interface": "lo", "min_jobs": 1, "max_jobs": 1, "local_directory": str(tmp_path / "worker-space"),
               "log_directory": str(tmp_path / "worker-logs"), "dashboard_address": None, "security": "tls"}
    config = base_config(tmp_path, home=None, cluster=cluster)
    config["cluster"].pop("n_workers", None)
    config["grid"]["density"] = [1.0e3]  # two models
    return write_config(tmp_path / "run.yaml", config)


def _job_processes(jobs: set[str]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("SLURM_JOB_ID") in jobs and "distributed" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(300)
def test_slurm_worker_jobs_get_key_files_not_key_text_and_no_password_they_do_not_need(
    tmp_path: Path, slurm: Slurm
) -> None:
    config = _slurm_config(tmp_path)
    db = tmp_path / "ledger.sqlite"
    driver = start_verbose_run(config, run_env(tmp_path, SLURM_CONF=str(slurm.conf), PDRFLOW_STANDIN_SECONDS="6"))
    try:
        wait_for(lambda: ledger_rows(db, "select count(*) from attempts where kind='model' and outcome='running' "
                                         "and slurm_job_id is not null")[0][0] >= 1, 120, "a model in a worker job",
                 driver)
        (credentials,) = tmp_path.glob(".pdrflow-tls-*")
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
        pems = {path.name: path for path in credentials.iterdir()}
        assert pems and {stat.S_IMODE(path.stat().st_mode) for path in pems.values()} == {0o600}, pems
        keys = [path.read_text() for path in pems.values() if "PRIVATE KEY" in path.read_text()]
        assert keys, sorted(pems)
        secret_lines = [line for pem in keys for line in key_lines(pem)]
        jobs = {row[0] for row in ledger_rows(db, "select external_id from worker_jobs")}
        assert jobs
        scripts = [slurm.run("scontrol", "write", "batch_script", job, "-").stdout for job in sorted(jobs)]
        assert all("distributed" in script for script in scripts), scripts  # really the job scripts
        workers = _job_processes(jobs)
        assert workers, "no worker process of the run's jobs"
        environments = [process.environ() for process in workers]
    finally:
        code, output = finish(driver)
    assert code == 0, output[-3000:]
    for script in scripts:
        # The script names the key file in the 0700 directory; the key itself is not in it.
        assert str(credentials) in script and any(name in script for name in pems), script
        assert "PRIVATE KEY" not in script and DB_CANARY not in script and SFTP_CANARY not in script, script
    assert_nowhere(secret_lines, [output, ledger_dump(db), *scripts], tmp_path)
    assert_nowhere([DB_CANARY, SFTP_CANARY], [output], tmp_path)
    assert (tmp_path / "worker-logs").is_dir() and files_under(tmp_path / "worker-logs")
    assert not credentials.exists(), "the worker jobs' credentials outlived the run"
    # An SQLite ledger needs no password: the worker jobs' processes must not hold one.
    for environment in environments:
        assert not {name: environment[name] for name in PASSWORD_VARIABLES if environment.get(name)}, (
            "the database password reached a worker job of an SQLite grid")


@pytest.mark.parametrize(
    ("url", "storage", "withheld"),
    [
        ("sqlite:///ledger.sqlite", "local", ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD", "PDRFLOW_SFTP_PASSWORD",
                                              "PDR_STORAGE_PASSWORD")),
        ("sqlite:///ledger.sqlite", "sftp", ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD")),
        ("postgresql+psycopg://pdrflow@db.example/pdrflow", "local", ("PDRFLOW_SFTP_PASSWORD",
                                                                      "PDR_STORAGE_PASSWORD")),
        ("mysql+pymysql://pdrflow@db.example/pdrflow", "sftp", ()),
    ],
)
def test_workers_are_withheld_exactly_the_passwords_they_never_use(
    tmp_path: Path, url: str, storage: str, withheld: tuple[str, ...]
) -> None:
    from pdrflow.cluster.security import withheld_from_workers
    from pdrflow.config import load_config

    config = base_config(tmp_path, home=None, database={"url": url})
    if storage == "sftp":
        config["storage"] = {"kind": "sftp", "host": "127.0.0.1", "root": "/srv/archive"}
    assert withheld_from_workers(load_config(write_config(tmp_path / "run.yaml", config))) == withheld
