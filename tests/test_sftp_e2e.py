"""``pdrflow run`` archiving to a real OpenSSH sshd: outages, refusals and the password canary."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, cli, files_under, ledger_rows, status, verify, wait_for, write_config
from services.sshd import Sshd, SystemUser

CANARY = "canary-Pw-e2e-51c0ffee"
WRONG = "canary-Wrong-e2e-0dd"
FILES_PER_MODEL = 9 + 7 * 4  # as in test_pipeline: 4 onion species

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def user() -> Iterator[SystemUser]:
    account = SystemUser.create(password=CANARY)
    yield account
    account.remove()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: a home without ~/.ssh, no agent, no password unless a test adds one."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "SSH_AUTH_SOCK": "",
        "PDRFLOW_SFTP_PASSWORD": "",
        "PDR_STORAGE_PASSWORD": "",
    }


def sftp_storage(server: Sshd, known_hosts: Path, root: Path, **overrides: Any) -> dict[str, Any]:
    storage: dict[str, Any] = {
        "kind": "sftp",
        "host": server.host,
        "port": server.port,
        "username": "root",
        "root": str(root),
        "key_filename": str(server.client_key),
        "known_hosts": str(known_hosts),
        "connect_timeout": 5,
        "operation_timeout": 10,
        "files_in_flight": 4,
    }
    storage.update(overrides)
    return storage


def grid(densities: int) -> dict[str, Any]:
    return {
        "name": "testgrid",
        "metallicity": [1.0],
        "density": [10.0 ** (3 + i) for i in range(densities)],
        "mass": [0.1],
        "fuv": [10.0, 100.0],
    }


def archived_count(db: Path) -> int:
    try:
        return int(ledger_rows(db, "select count(*) from jobs where state='archived'")[0][0])
    except sqlite3.Error:
        return 0  # the ledger may not exist yet


def test_sshd_killed_and_restarted_during_a_run(tmp_path: Path, null_home: Path, env: dict[str, str]) -> None:
    models = 12
    with Sshd(workdir=tmp_path / "sshd") as server:
        known = server.write_known_hosts(tmp_path / "known_hosts")
        archive = tmp_path / "archive"
        document = base_config(
            tmp_path,
            home=null_home,
            storage=sftp_storage(server, known, archive),
            run={"archive_attempts": 30, "archive_backoff_initial": 0.3, "archive_backoff_max": 1.0},
        )
        document["grid"] = grid(models // 2)
        config = write_config(tmp_path / "run.yaml", document)
        process = subprocess.Popen(
            [sys.executable, "-m", "pdrflow", "run", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
        )
        db = tmp_path / "ledger.sqlite"
        seen: dict[str, int] = {}

        def outage() -> None:
            deadline = time.monotonic() + 120
            while archived_count(db) < 1 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            server.kill()  # the server crashes with its connections open
            seen["at_kill"] = archived_count(db)
            time.sleep(2.0)
            seen["at_restart"] = archived_count(db)
            server.start()  # same port, same host key

        breaker = threading.Thread(target=outage)
        breaker.start()
        output, _ = process.communicate(timeout=170)
        breaker.join()
        assert process.returncode == 0, output
        assert seen["at_restart"] < models, seen  # some archivals really had to cross the outage
        report = status(config)
        assert report["counts"] == {"archived": models}
        assert report["attempts"]["model"] == models  # no model recomputed
        assert verify(config)["returncode"] == 0
        final = [p for p in files_under(archive) if ".pdrflow-" not in p.name]
        assert len(final) == models * FILES_PER_MODEL
        # Partial files of uploads the crash cut off may remain, but only under hidden temporary names.
        for partial in (p for p in files_under(archive) if ".pdrflow-" in p.name):
            assert partial.name.startswith(".") and partial.name.endswith(".part"), partial


def test_permission_denied_refuses_the_run_before_any_model_with_the_reason(
    tmp_path: Path, null_home: Path, env: dict[str, str], sshd: Sshd, user: SystemUser, public_dir: Path
) -> None:
    locked = public_dir / "locked"
    locked.mkdir()  # owned by root: the SFTP user cannot create anything in it
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    config = write_config(
        tmp_path / "run.yaml",
        base_config(
            tmp_path,
            home=null_home,
            storage=sftp_storage(sshd, known, locked, username=user.name),
            run={"archive_attempts": 1},
        ),
    )
    # Known before any model runs: the preflight's probe refuses the run, naming the cause (exit 2, nothing run).
    done = cli("run", str(config), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"permission denied creating directory {locked}/testgrid on 127.0.0.1:{sshd.port}" in done.stderr
    assert ledger_rows(tmp_path / "ledger.sqlite", "SELECT count(*) FROM attempts") == [(0,)]
    assert list(locked.iterdir()) == []


def test_full_disk_refuses_the_run_before_any_model_with_the_reason(
    tmp_path: Path, null_home: Path, env: dict[str, str], sshd: Sshd
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=False, capture_output=True, timeout=10
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "archive" / "testgrid" / "pdrgrid").mkdir(parents=True)
        (disk / "archive" / "testgrid" / "oniongrid").mkdir(parents=True)
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):  # fill it to the last block
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        known = sshd.write_known_hosts(tmp_path / "known_hosts")
        config = write_config(
            tmp_path / "run.yaml",
            base_config(
                tmp_path,
                home=null_home,
                storage=sftp_storage(sshd, known, disk / "archive"),
                run={"archive_attempts": 1},
            ),
        )
        done = cli("run", str(config), env=env)  # refused by the preflight's probe: nothing runs
        assert done.returncode == 2, done.stdout + done.stderr
        assert "no space left on device" in done.stderr and f"on 127.0.0.1:{sshd.port}" in done.stderr
        assert ledger_rows(tmp_path / "ledger.sqlite", "SELECT count(*) FROM attempts") == [(0,)]
        assert [p.name for p in files_under(disk / "archive")] == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=10, check=True)


def test_the_password_never_appears_anywhere(
    tmp_path: Path, null_home: Path, env: dict[str, str], sshd: Sshd, user: SystemUser, public_dir: Path
) -> None:
    root = public_dir / "archive"
    root.mkdir()
    shutil.chown(root, user.name, user.name)
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    storage = sftp_storage(sshd, known, root, username=user.name)
    del storage["key_filename"]
    good = write_config(tmp_path / "good.yaml", base_config(tmp_path / "good", home=null_home, storage=storage))
    done = cli("-v", "run", str(good), env={**env, "PDRFLOW_SFTP_PASSWORD": CANARY})
    assert done.returncode == 0, done.stdout + done.stderr
    assert ledger_rows(tmp_path / "good" / "ledger.sqlite", "select state, count(*) from jobs group by state") == [
        ("archived", 4)
    ]
    assert len(files_under(root)) == 4 * FILES_PER_MODEL
    assert all(p.stat().st_uid == user.uid for p in files_under(root))

    bad = write_config(
        tmp_path / "bad.yaml",
        base_config(tmp_path / "bad", home=null_home, grid="othergrid", storage=storage, run={"archive_attempts": 1}),
    )
    failed = cli("-v", "run", str(bad), env={**env, "PDR_STORAGE_PASSWORD": WRONG})
    assert failed.returncode == 2  # the preflight cannot log in: refused before any model
    assert "password from PDRFLOW_SFTP_PASSWORD rejected" in failed.stderr
    shown = cli("status", str(bad), "--json", env=env)

    outputs = [done.stdout, done.stderr, failed.stdout, failed.stderr, shown.stdout]
    assert len("".join(outputs)) > 1000  # there was real output to search
    for secret in (CANARY, WRONG):
        for text in outputs:
            assert secret not in text
        for path in files_under(tmp_path):  # ledgers, logs, configs, scratch leftovers
            assert secret.encode() not in path.read_bytes(), path


def _model_attempts(db: Path) -> int:
    try:
        return int(ledger_rows(db, "SELECT count(*) FROM attempts WHERE kind = 'model'")[0][0])
    except sqlite3.Error:  # no schema yet
        return 0


def test_a_link_cut_mid_transfer_is_failed_storage_and_resubmit_archives_without_rerun(
    tmp_path: Path, null_home: Path, env: dict[str, str], sshd: Sshd
) -> None:
    from services.tcp_proxy import TcpProxy

    archive = tmp_path / "archive"
    with TcpProxy(sshd.port) as proxy:
        known = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        storage = sftp_storage(sshd, known, archive, port=proxy.port, operation_timeout=3)
        document = base_config(tmp_path, home=null_home, storage=storage, run={"archive_attempts": 1})
        document["grid"] = grid(1)
        config = write_config(tmp_path / "run.yaml", document)
        run = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # After the preflight (its probe crosses the link too): once a model runs, cut mid-way through the
        # first model's files, then refuse until healed.
        wait_for(lambda: _model_attempts(tmp_path / "ledger.sqlite") > 0, 120, "a model attempt", run)
        proxy.cut_after(8_000)
        output, _ = run.communicate(timeout=240)
        assert run.returncode == 1, output
        assert proxy.cut_event.is_set()
        report = status(config)
        assert report["counts"] == {"failed_storage": 2}
        assert all("127.0.0.1" in job["reason"] for job in report["failed"])
        final = [p for p in files_under(archive) if ".pdrflow-" not in p.name]
        # Whatever reached a final path is complete: not a single partial file under a final name.
        for path in final:
            assert path.stat().st_size > 0
        assert ledger_rows(tmp_path / "ledger.sqlite", "select count(*) from archived_files") == [(0,)]
        proxy.heal()
        fixed = cli("resubmit", str(config), env=env)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        report = status(config)
        assert report["counts"] == {"archived": 2}
        assert report["attempts"]["model"] == 2  # no model was recomputed
        assert verify(config)["returncode"] == 0
