"""An archival does not hold its worker's thread (the next model starts while it uploads), and does not wait
behind a model sent ahead to its worker."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

from helpers import assert_consistent, base_config, cli, ledger_rows, run_local_grid, slow_null_home, write_config
from services.sshd import Sshd
from services.tcp_proxy import TcpProxy
from test_fault_matrix import sftp_storage

MODELS = 4  # the base config's grid


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(str(text))


def test_the_next_model_runs_while_an_archival_uploads(tmp_path: Path, null_home: Path, sshd: Sshd) -> None:
    """One worker with one thread, archivals slowed to seconds by a 150 kB/s link: the archival of one
    model is pinned to that worker (it holds the outputs), and the next model runs there meanwhile."""
    home = slow_null_home(tmp_path, null_home, 1, pad_bytes=300_000)
    (tmp_path / "home").mkdir()
    ssh_env = {"HOME": str(tmp_path / "home"), "SSH_AUTH_SOCK": ""}  # no ~/.ssh, no agent
    with TcpProxy(sshd.port) as proxy:
        proxy.bandwidth = 150_000
        known = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        settings = base_config(tmp_path, home=home, storage=sftp_storage(sshd, known, tmp_path / "archive",
                                                                          port=proxy.port))
        settings["cluster"].update(n_workers=1, threads_per_worker=1)
        config = write_config(tmp_path / "run.yaml", settings)
        done = cli("run", str(config), env=ssh_env)
        assert done.returncode == 0, done.stdout + done.stderr
        proxy.bandwidth = None
        summary = assert_consistent(config, env=ssh_env, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}
    rows = ledger_rows(tmp_path / "ledger.sqlite", "select kind, started_at, ended_at, worker from attempts "
                                                   "where outcome = 'ok' order by started_at")
    assert len({worker for *_, worker in rows}) == 1  # one worker did everything
    archivals = [(_stamp(start), _stamp(end)) for kind, start, end, _ in rows if kind == "archive"]
    models = [_stamp(start) for kind, start, _, _ in rows if kind == "model"]
    overlapped = [start for start in models if any(a < start < b for a, b in archivals)]
    assert overlapped, rows  # a model started while an archival was still uploading


def test_an_archival_starts_when_its_model_ends_not_after_the_next_model(tmp_path: Path, null_home: Path) -> None:
    """One worker with one thread and models of 2 s. Had the driver sent it the next model while one still
    ran, that model would start the moment the first ended, and the first one's archival, pinned to the
    worker, would wait for the whole of it. The driver sends models only to free slots (driver.py _window)."""
    run_local_grid(tmp_path, slow_null_home(tmp_path, null_home, 2), n_workers=1)
    rows = ledger_rows(tmp_path / "ledger.sqlite", "select job_id, kind, started_at, ended_at from attempts "
                                                   "where outcome = 'ok' order by started_at")
    models = [(job, _stamp(start), _stamp(end)) for job, kind, start, end in rows if kind == "model"]
    archival_start = {job: _stamp(start) for job, kind, start, _ in rows if kind == "archive"}
    waited = [(job, str(archival_start[job]), str(next_end))
              for (job, _, _), (_, _, next_end) in itertools.pairwise(models) if archival_start[job] >= next_end]
    assert not waited, rows  # (job, its archival's start, the end of the model after it)
