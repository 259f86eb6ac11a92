"""pdrflow never overwrites a file at an archive path that the ledger did not write for that job.

End to end through the CLI (local directory and a real sshd), and the archival task on its own for
the paths a run alone does not reach: a file ``pdrflow migrate`` recorded (moved aside, never
deleted) and leftovers of an earlier, cut-off archival (pdrflow's own: replaced).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, cli, files_under, ledger_rows, status, write_config
from sqlalchemy.orm import Session

from pdrflow.config import load_config
from pdrflow.errors import StorageFailed
from pdrflow.ledger import Ledger
from pdrflow.ledger.schema import PreexistingFile
from pdrflow.plan import plan_run
from pdrflow.storage import StorageError
from pdrflow.storage.local import LocalStorage
from pdrflow.tasks.archive import SUPERSEDED_DIR, archive_job
from pdrflow.tasks.run import run_model
from pdrflow.tasks.types import Manifest, ModelJob, RunSettings

pytestmark = pytest.mark.timeout(180)

FOREIGN_MODEL = "100_30_-10_10_00"
OTHER_MODEL = "100_40_-10_10_00"
FILES_PER_MODEL = 9 + 7 * 4
FOREIGN = {  # what another tool left at two of FOREIGN_MODEL's archive paths
    f"testgrid/pdrgrid/TEXTOUT{FOREIGN_MODEL}": b"the predecessor's TEXTOUT\n",
    f"testgrid/oniongrid/ONION{FOREIGN_MODEL}.jerg_CO.smli": b"predecessor jerg CO\n",
}
# The null onion writes "<species>\n": the same bytes as a run of OTHER_MODEL stages.
IDENTICAL = (f"testgrid/oniongrid/ONION{OTHER_MODEL}.jerg_C+.smli", b"C+\n")


def _sftp_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "SSH_AUTH_SOCK": "", "PDRFLOW_SFTP_PASSWORD": "", "PDR_STORAGE_PASSWORD": ""}


@pytest.fixture(params=["local", pytest.param("sftp", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(storage section, CLI environment); the archive is tmp_path/archive either way."""
    archive = tmp_path / "archive"
    if request.param == "local":
        return {"kind": "local", "root": str(archive)}, {}
    sshd = request.getfixturevalue("sshd")
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    storage = {"kind": "sftp", "host": sshd.host, "port": sshd.port, "username": "root", "root": str(archive),
               "key_filename": str(sshd.client_key), "known_hosts": str(known), "connect_timeout": 5,
               "operation_timeout": 10, "files_in_flight": 4}
    return storage, _sftp_env(tmp_path)


def test_foreign_files_stay_untouched_and_fail_the_model_permanently(
    tmp_path: Path, null_home: Path, backend: tuple[dict[str, Any], dict[str, str]]
) -> None:
    storage, env = backend
    document = base_config(tmp_path, home=null_home, storage=storage, run={"archive_attempts": 6})
    document["grid"]["fuv"] = [10.0]  # two models: FOREIGN_MODEL and OTHER_MODEL
    config = write_config(tmp_path / "run.yaml", document)
    archive = tmp_path / "archive"
    for path, data in (*FOREIGN.items(), IDENTICAL):
        (archive / path).parent.mkdir(parents=True, exist_ok=True)
        (archive / path).write_bytes(data)

    done = cli("run", str(config), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    output = " ".join((done.stdout + done.stderr).split())  # rich may wrap the long reason
    assert f"failed_storage {FOREIGN_MODEL}" in output
    for path in FOREIGN:
        assert path in output
    assert "run `pdrflow migrate` to take the old grid over, or choose another grid.name" in output

    # The foreign files are byte for byte what they were, and nothing else of that model was written.
    for path, data in FOREIGN.items():
        assert (archive / path).read_bytes() == data
    written = [str(p.relative_to(archive)) for p in files_under(archive) if FOREIGN_MODEL in p.name]
    assert sorted(written) == sorted(FOREIGN)

    report = status(config)
    assert report["counts"] == {"archived": 1, "failed_storage": 1}
    (failed,) = report["failed"]
    assert failed["name"] == FOREIGN_MODEL and failed["state"] == "failed_storage"
    assert failed["reason"].startswith("2 file(s) at this model's archive paths were not written by pdrflow")
    assert all(path in failed["reason"] for path in FOREIGN) and "pdrflow migrate" in failed["reason"]
    db = tmp_path / "ledger.sqlite"
    attempts = ledger_rows(db, "select a.outcome from attempts a join jobs j on a.job_id = j.id "
                               "where j.name = ? and a.kind = 'archive'", FOREIGN_MODEL)
    assert attempts == [("failed",)]  # permanent: not retried 6 times

    # The file that already held the staged bytes was not foreign: OTHER_MODEL is archived with it.
    assert (archive / IDENTICAL[0]).read_bytes() == IDENTICAL[1]
    recorded = dict(ledger_rows(db, "select f.path, f.sha256 from archived_files f join jobs j on f.job_id = j.id "
                                    "where j.name = ?", OTHER_MODEL))
    assert len(recorded) == FILES_PER_MODEL
    assert recorded[IDENTICAL[0]] == hashlib.sha256(IDENTICAL[1]).hexdigest()


# ---- the archival task on its own -------------------------------------------------------------------


@pytest.fixture
def computed(tmp_path: Path, null_home: Path) -> Iterator[tuple[Ledger, RunSettings, Manifest]]:
    """One model of the null grid computed (run task, no cluster) and staged, not archived yet."""
    document = base_config(tmp_path, home=null_home)
    document["grid"].update(density=[1.0e3], fuv=[10.0])
    plan = plan_run(load_config(write_config(tmp_path / "run.yaml", document)))
    ledger = Ledger(plan.settings.database.sqlalchemy_url())
    ledger.register_grid(plan.settings.grid, plan.specs.values())
    (job,) = ledger.jobs(plan.settings.grid)
    manifest = run_model(ModelJob(job.id, plan.specs[job.model_hash]), plan.settings)
    try:
        yield ledger, plan.settings, manifest
    finally:
        ledger.close()


def _staged_bytes(manifest: Manifest, target: str) -> bytes:
    (staged,) = [f for f in manifest.files if f.target == target]
    return (Path(manifest.scratch_dir) / staged.source).read_bytes()


def test_a_recorded_preexisting_file_is_moved_aside_and_recorded(
    tmp_path: Path, computed: tuple[Ledger, RunSettings, Manifest]
) -> None:
    ledger, settings, manifest = computed
    archive = tmp_path / "archive"
    path = f"testgrid/pdrgrid/pdrstruct{FOREIGN_MODEL}.hdf5"
    old = b"pdr_run's structure file\n"
    (archive / path).parent.mkdir(parents=True)
    (archive / path).write_bytes(old)
    with Session(ledger.engine) as session, session.begin():
        session.add(PreexistingFile(job_id=manifest.job_id, path=path, size=len(old),
                                    sha256=hashlib.sha256(old).hexdigest(), origin="pdr_run"))

    staged = _staged_bytes(manifest, path)  # the archival removes the scratch dir
    result = archive_job(manifest, settings)

    assert result.files == len(manifest.files)
    assert (archive / path).read_bytes() == staged
    details = ledger.job_details("testgrid", FOREIGN_MODEL)
    assert details is not None and details["state"] == "archived"
    (row,) = details["preexisting_files"]
    assert row["moved_to"] is not None and row["moved_at"] is not None
    assert re.fullmatch(rf"testgrid/{SUPERSEDED_DIR}/{FOREIGN_MODEL}/\d{{8}}T\d{{6}}\.\d{{6}}Z/pdrgrid/"
                        rf"pdrstruct{FOREIGN_MODEL}\.hdf5", row["moved_to"]), row["moved_to"]
    assert (archive / row["moved_to"]).read_bytes() == old  # moved, never deleted


def test_leftovers_of_an_earlier_archival_are_replaced_foreign_bytes_are_not(
    tmp_path: Path, computed: tuple[Ledger, RunSettings, Manifest]
) -> None:
    ledger, settings, manifest = computed
    archive = tmp_path / "archive"
    ours = f"testgrid/pdrgrid/CTRL_IND{FOREIGN_MODEL}"
    theirs = f"testgrid/pdrgrid/chemchk{FOREIGN_MODEL}.out"
    earlier = b"bytes an earlier archival of this job planned and wrote\n"
    (archive / ours).parent.mkdir(parents=True)
    (archive / ours).write_bytes(earlier)
    # An earlier archival planned these bytes at `ours`, then was cut off before its commit.
    attempt = ledger.start_archive(manifest.job_id, "host", None, planned_files={ours: hashlib.sha256(earlier)
                                                                                 .hexdigest()}).attempt_id
    ledger.fail_archive(manifest.job_id, attempt, "cut off")
    (archive / theirs).write_bytes(b"someone else's\n")

    with pytest.raises(StorageFailed) as failure:
        archive_job(manifest, settings)
    assert failure.value.permanent and not failure.value.staged_missing
    assert theirs in failure.value.reason and ours not in failure.value.reason
    assert (archive / theirs).read_bytes() == b"someone else's\n"
    assert (archive / ours).read_bytes() == earlier  # checked before anything is written
    assert ledger.job(manifest.job_id).state == "failed_storage"
    plans = ledger_rows(tmp_path / "ledger.sqlite", "select planned_files from attempts where kind = 'archive' "
                                                    "order by id")
    assert json.loads(plans[-1][0]) == {f.target: f.sha256 for f in manifest.files}  # recorded before uploading

    (archive / theirs).unlink()  # the user cleared the way
    staged = _staged_bytes(manifest, ours)
    archive_job(manifest, settings)
    assert (archive / ours).read_bytes() == staged
    assert ledger.job(manifest.job_id).state == "archived"
    plans = ledger_rows(tmp_path / "ledger.sqlite", "select planned_files from attempts where kind = 'archive' "
                                                    "order by id")
    assert plans[-1] == (None,) and all(plan is not None for (plan,) in plans[:-1])  # committed: rows hold it


def test_local_rename_never_replaces(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a").write_bytes(b"a")
    (tmp_path / "g" / "b").write_bytes(b"b")
    with pytest.raises(StorageError, match="exists"):
        storage.rename("g/a", "g/b")
    assert (tmp_path / "g" / "a").read_bytes() == b"a" and (tmp_path / "g" / "b").read_bytes() == b"b"
    storage.rename("g/a", "g/x/y/a")
    assert not (tmp_path / "g" / "a").exists() and (tmp_path / "g" / "x" / "y" / "a").read_bytes() == b"a"
    assert storage.existing(["g/b", "g/a", "g/x/y/a", "nothing/here"]) == {"g/b": 1, "g/x/y/a": 1}


def test_sftp_rename_never_replaces_and_existing_finds_files(
    tmp_path: Path, sshd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pdrflow.config import SftpStorageConfig
    from pdrflow.storage.sftp import SftpStorage

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    root = tmp_path / "archive"
    (root / "g").mkdir(parents=True)
    (root / "g" / "a").write_bytes(b"a")
    (root / "g" / "b").write_bytes(b"bb")
    config = SftpStorageConfig(
        kind="sftp", host=sshd.host, port=sshd.port, username="root", root=str(root), key_filename=sshd.client_key,
        known_hosts=sshd.write_known_hosts(tmp_path / "known_hosts"), ssh_config=None, connect_timeout=5.0,
        operation_timeout=10.0, files_in_flight=4, password=None,
    )
    with SftpStorage(config) as storage:
        many = [f"g/none{i}" for i in range(300)]  # more than one batch of pipelined requests
        assert storage.existing(["g/b", "g/a", "nothing/here", *many]) == {"g/b": 2, "g/a": 1}
        with pytest.raises(StorageError, match="exists"):
            storage.rename("g/a", "g/b")
        assert (root / "g" / "a").read_bytes() == b"a" and (root / "g" / "b").read_bytes() == b"bb"
        storage.rename("g/a", "g/x/y/a")
        assert not (root / "g" / "a").exists() and (root / "g" / "x" / "y" / "a").read_bytes() == b"a"
        with pytest.raises(StorageError, match="no such file"):
            storage.rename("g/a", "g/z")
