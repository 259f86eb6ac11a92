"""``pdrflow verify --repair`` (issue 15, item 1): a damaged archive made sound again, nothing silently replaced.

A 4-model grid of the null KOSMA-tau is run for real; then one archived file is deleted and two
are overwritten. ``verify`` reports it (exit 1) and changes nothing; ``verify --repair`` moves the
changed bytes aside (kept, recorded), archives again from staged outputs where they are still in
scratch (no model run) and computes the model again where they are not; afterwards ``verify``
exits 0.

Staged outputs normally go once a model is archived. To have them still there, as when the
archival's clean-up could not remove its scratch directory, this null pdrexe marks its scratch
directories append-only (``chattr +a``: files can be added, none removed): the archival's
``rmtree`` leaves every staged file in place. The test clears the flag again before it removes a
scratch directory itself and at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import NULL_SPECIES, base_config, cli, ledger_rows, write_config

pytestmark = pytest.mark.timeout(300)

# In onionexe for the last species: the run task unlinks onionoutput/TEXTOUT before each onion step.
KEEP_SCRATCH = ('[ "$species" = "{last}" ] && {{ chattr +a . pdroutput onionoutput Out || '
                '{{ echo "chattr refused"; exit 9; }}; }}\n')


def _unprotect(scratch: Path) -> None:
    if scratch.exists():
        subprocess.run(["chattr", "-R", "-a", str(scratch)], capture_output=True, timeout=60, check=False)


@pytest.fixture
def keeping_home(tmp_path: Path, null_home: Path) -> Iterator[Path]:
    """The null home whose onionexe leaves its scratch directory impossible to remove (append-only)."""
    home = tmp_path / "keeping-home"
    shutil.copytree(null_home, home, symlinks=True)
    onion = home / "onionexe"
    script = onion.read_text()
    marker = 'echo "null onionexe $species done"\n'
    assert marker in script
    onion.write_text(script.replace(marker, KEEP_SCRATCH.format(last=NULL_SPECIES[-1]) + marker))
    probe = tmp_path / "chattr-probe"
    probe.mkdir()
    done = subprocess.run(["chattr", "+a", str(probe)], capture_output=True, text=True, timeout=30, check=False)
    _unprotect(probe)
    if done.returncode != 0:
        pytest.skip(f"chattr +a refused here: {done.stderr.strip()}")
    try:
        yield home
    finally:
        _unprotect(tmp_path / "scratch")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_attempts(db: Path) -> dict[str, int]:
    return dict(ledger_rows(db, "select j.name, count(a.id) from jobs j left join attempts a on a.job_id = j.id "
                                "and a.kind = 'model' group by j.name"))


def _snapshot(db: Path, archive: Path) -> tuple[object, ...]:
    """Everything verify without --repair must leave as it was."""
    return (ledger_rows(db, "select id, state, reason, staged_dir from jobs order by id"),
            ledger_rows(db, "select id, outcome, error from attempts order by id"),
            ledger_rows(db, "select path, size, sha256 from archived_files order by path"),
            ledger_rows(db, "select * from preexisting_files"),
            sorted((str(p.relative_to(archive)), _sha(p)) for p in archive.rglob("*") if p.is_file()))


def test_repair_rearchives_staged_outputs_recomputes_the_rest_and_keeps_the_damaged_bytes(
    tmp_path: Path, keeping_home: Path
) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=keeping_home))
    db, archive, grid = tmp_path / "ledger.sqlite", tmp_path / "archive", tmp_path / "archive" / "testgrid"
    first = cli("run", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    scratch = dict(ledger_rows(db, "select name, json_extract(provenance, '$.scratch_dir') from jobs"))
    assert len(scratch) == 4 and all((Path(s) / "pdrflow-manifest.json").is_file() for s in scratch.values())
    recorded = {path: (job, sha) for job, path, sha in ledger_rows(
        db, "select j.name, f.path, f.sha256 from archived_files f join jobs j on j.id = f.job_id")}
    files_before = len(recorded)
    a, b, c, d = sorted(scratch)
    # a: a file deleted (staged outputs kept); b: a file overwritten (kept); c: overwritten, its scratch removed
    deleted = grid / "pdrgrid" / f"pdrstruct{a}.hdf5"
    changed_b = grid / "oniongrid" / f"ONION{b}.linebt_CO.out"
    changed_c = grid / "pdrgrid" / f"TEXTOUT{c}"
    original = {path: path.read_bytes() for path in (deleted, changed_b, changed_c)}
    deleted.unlink()
    changed_b.write_bytes(b"overwritten by someone else\n")
    changed_c.write_bytes(original[changed_c] + b"appended garbage\n")
    damaged = {changed_b: changed_b.read_bytes(), changed_c: changed_c.read_bytes()}
    _unprotect(Path(scratch[c]))
    shutil.rmtree(scratch[c])
    runs_before = _model_attempts(db)

    # verify alone reports and changes nothing
    before = _snapshot(db, archive)
    report = cli("verify", str(config), "--json")
    assert report.returncode == 1, report.stdout + report.stderr
    document = json.loads(report.stdout)
    rel = {p: str(p.relative_to(archive)) for p in (deleted, changed_b, changed_c)}
    assert document["missing"] == [rel[deleted]]
    assert sorted(document["mismatched"]) == sorted([rel[changed_b], rel[changed_c]])
    assert _snapshot(db, archive) == before

    repaired = cli("verify", str(config), "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "checked 148 archived files: 148 ok" in repaired.stdout.replace("\n", " ").split("after the repair:")[-1]

    # archived again from the staged outputs (no model run) where they remained; computed again where not
    runs_after = _model_attempts(db)
    assert {name: runs_after[name] - runs_before[name] for name in runs_after} == {a: 0, b: 0, c: 1, d: 0}
    assert ledger_rows(db, "select distinct state from jobs") == [("archived",)]
    for path, data in original.items():
        if path is not changed_c:  # the recomputed model's TEXTOUT may differ; the ledger records what is there
            assert path.read_bytes() == data
    # the damaged bytes were kept aside, under the grid, and recorded with both digests
    moved = ledger_rows(db, "select j.name, p.path, p.sha256, p.recorded_sha256, p.origin, p.moved_to "
                            "from preexisting_files p join jobs j on j.id = p.job_id order by j.name")
    assert [(name, path) for name, path, *_ in moved] == [(b, rel[changed_b]), (c, rel[changed_c])]
    for (_name, path, found, was, origin, moved_to), source in zip(moved, (changed_b, changed_c), strict=True):
        assert origin == "pdrflow verify"
        assert (found, was) == (hashlib.sha256(damaged[source]).hexdigest(), recorded[path][1])
        assert moved_to.startswith("testgrid/pdrflow-superseded/")
        assert (archive / moved_to).read_bytes() == damaged[source]
    # the ledger says what happened: a failed archive attempt with the reason, then a successful one
    for name, what in ((a, "1 missing"), (b, "1 changed"), (c, "1 changed")):
        outcomes = ledger_rows(db, "select a.outcome, a.error from attempts a join jobs j on j.id = a.job_id "
                                   "where j.name = ? and a.kind = 'archive' order by a.id", name)
        assert [o for o, _ in outcomes] == ["ok", "failed", "ok"], outcomes
        assert outcomes[1][1].startswith(f"verify: {what}"), outcomes[1][1]
    assert "staged outputs gone" in ledger_rows(
        db, "select a.error from attempts a join jobs j on j.id = a.job_id where j.name = ? and a.outcome = 'failed'",
        c)[0][0]

    again = cli("verify", str(config), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["checked"] == files_before


def test_verify_of_a_grid_never_run_says_so_and_exits_2(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home))
    done = cli("verify", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nothing to look at: grid testgrid was never run" in done.stderr
    assert not (tmp_path / "ledger.sqlite").exists()  # verify wrote nothing
    # a ledger that holds other grids only: the same
    other = write_config(tmp_path / "other.yaml", base_config(tmp_path, home=null_home, grid="othergrid"))
    ran = cli("run", str(other))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    again = cli("verify", str(config), "--json")
    assert again.returncode == 2, again.stdout + again.stderr
    assert json.loads(again.stdout)["error"] == "nothing to look at: grid testgrid was never run"
    repair = cli("verify", str(config), "--repair")
    assert repair.returncode == 2, repair.stdout + repair.stderr
