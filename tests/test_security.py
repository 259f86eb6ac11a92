"""No one else on the machine can run code through a pdrflow run (issue 13).

While a stand-in grid runs on a LocalCluster, on the single-node SLURM (SLURMCluster) and in a
SLURMRunner allocation, a process of ANOTHER local user connects to every TCP port the run's
processes listen on: with a plain ``distributed.Client`` (over tcp://, and over tls:// with a
certificate of its own) and with a raw TCP client that sends Dask ``run`` / ``run_function``
messages. The code it sends would write a marker file into a directory only root (the pdrflow
user here) can write, and hand back ``PDRFLOW_DB_PASSWORD``. With ``cluster.security: tls`` no
marker appears and no secret comes back; with ``cluster.security: none`` both happen, so the
test can fail.

The attacker runs as ``runuser -u <user> -- /usr/bin/python3.11 attacker.py``: the venv's own
interpreter lives below /root (0700) where another user cannot execute it, so the attacker uses
the system's CPython 3.11 with the venv's site-packages (the same distributed), readable by all.

The SLURM tests have "slurm" in their names: they must share a test worker with test_slurm.py
(one munged, one node's CPUs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import base_config, ledger_rows, start_run, wait_for, write_config
from services.slurm import Slurm, start_slurm
from services.sshd import SystemUser

REPO = Path(__file__).resolve().parent.parent
CANARY = "canary-DbPw-sec13"
SYSTEM_PYTHON = "/usr/bin/python3.11"
MODEL_SECONDS = "60"  # models outlast the attack; the run is stopped once the attack is over

ATTACKER = r'''
"""Another user's attack on every port of a pdrflow run: argv = site-packages, ports.json, markers dir, out."""
import asyncio, json, struct, sys

sys.path.insert(0, sys.argv[1])
from distributed import Client
from distributed.comm.tcp import _add_frames_header
from distributed.protocol import dumps, loads
from distributed.protocol.pickle import dumps as pickle_dumps
from distributed.protocol.utils import unpack_frames
from distributed.security import Security

TARGETS, MARKERS, OUT = json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]


def evil(markers, tag):
    """What the attacker wants to run as the pdrflow user: leave a mark, take the password."""
    import os
    import pathlib

    pathlib.Path(markers, f"{tag}-{os.getpid()}").write_text(str(os.getuid()))
    return os.environ.get("PDRFLOW_DB_PASSWORD")


async def with_client(host, port, tls):
    security = Security.temporary() if tls else None  # a certificate of the attacker's own
    address = f"{'tls' if tls else 'tcp'}://{host}:{port}"
    try:
        client = await asyncio.wait_for(Client(address, asynchronous=True, timeout=3, security=security), 6)
    except BaseException as exc:
        return {"connected": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    got = {"connected": True, "secrets": []}
    try:
        for call in (client.run(evil, MARKERS, f"client-{port}"), client.run_on_scheduler(evil, MARKERS,
                                                                                            f"client-sched-{port}")):
            try:
                result = await asyncio.wait_for(call, 6)
                got["secrets"] += list(result.values()) if isinstance(result, dict) else [result]
            except BaseException as exc:
                got.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        await client.close()
    return got


def frames_of(message):
    frames, _, _ = _add_frames_header(dumps(message))
    return b"".join(bytes(frame) for frame in frames)


async def read_message(reader):
    (size,) = struct.unpack("Q", await reader.readexactly(8))
    frames, missing = unpack_frames(await reader.readexactly(size), partial=True)
    for length in missing:
        frames.append(await reader.readexactly(length))
    return loads(frames)


async def raw(host, port, op):
    """No distributed comm layer: a socket, Dask's framing, a handshake and one message."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
    except BaseException as exc:
        return {"sent": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    got = {"sent": True}
    try:
        try:  # a plain Dask server speaks first; TLS and HTTP servers wait for the client
            got["handshake"] = str(await asyncio.wait_for(read_message(reader), 1.5))[:200]
        except BaseException as exc:
            got["handshake_error"] = type(exc).__name__
        writer.write(frames_of({"compression": None, "python": tuple(sys.version_info)[:3], "pickle-protocol": 5}))
        writer.write(frames_of({"op": op, "function": pickle_dumps(evil), "reply": True, "wait": True,
                                "args": pickle_dumps((MARKERS, f"raw-{op}-{port}"))}))
        await writer.drain()
        got["reply"] = str(await asyncio.wait_for(read_message(reader), 4))[:300]
    except BaseException as exc:
        got["error"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        writer.close()
    return got


async def attack(host, port):
    client, client_tls, run, run_function = await asyncio.gather(
        with_client(host, port, False), with_client(host, port, True), raw(host, port, "run"),
        raw(host, port, "run_function"))
    return {"port": port, "client": client, "client_tls": client_tls, "raw_run": run, "raw_run_function": run_function}


async def main():
    import os

    results = await asyncio.gather(*(attack(host, port) for host, port in TARGETS))
    with open(OUT, "w") as out:
        json.dump({"uid": os.getuid(), "results": results}, out, indent=1)

asyncio.run(main())
'''


@pytest.fixture(scope="module")
def attacker() -> Iterator[SystemUser]:
    user = SystemUser.create(prefix="pdratk")
    yield user
    user.remove()


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    cluster = start_slurm()
    yield cluster
    cluster.stop()


@pytest.fixture
def markers() -> Iterator[Path]:
    """Owned by root, 0755: the attacker cannot write here, code running as the pdrflow user can."""
    directory = Path(tempfile.mkdtemp(prefix="pdrflow-markers-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run_processes(root_pid: int | None, slurm_jobs: set[str]) -> list[psutil.Process]:
    """The driver's process tree, plus every process of the run's SLURM jobs (started by slurmd, not the driver)."""
    found: dict[int, psutil.Process] = {}
    try:
        if root_pid is not None:
            driver = psutil.Process(root_pid)
            found = {p.pid: p for p in [driver, *driver.children(recursive=True)]}
    except psutil.Error:
        pass
    if slurm_jobs:
        for process in psutil.process_iter():
            try:
                if process.environ().get("SLURM_JOB_ID") in slurm_jobs:
                    found[process.pid] = process
            except psutil.Error:
                continue
    return list(found.values())


def listening(processes: list[psutil.Process]) -> list[tuple[str, int]]:
    ports: set[tuple[str, int]] = set()
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    host = conn.laddr.ip if conn.laddr.ip not in ("0.0.0.0", "::") else "127.0.0.1"
                    ports.add((host, conn.laddr.port))
        except psutil.Error:
            continue
    return sorted(ports)


def attack(user: SystemUser, targets: list[tuple[str, int]], markers: Path) -> list[dict]:
    script, ports, out = user.home / "attacker.py", user.home / "ports.json", user.home / "out.json"
    script.write_text(ATTACKER)
    ports.write_text(json.dumps(targets))
    for path in (script, ports):
        path.chmod(0o644)
    out.unlink(missing_ok=True)
    site = sysconfig.get_paths()["purelib"]  # the venv's site-packages (readable by everyone)
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    done = subprocess.run([runuser, "-u", user.name, "--", SYSTEM_PYTHON, str(script), site, str(ports), str(markers),
                           str(out)], capture_output=True, text=True, timeout=60, cwd=str(user.home),
                          env={"PATH": "/usr/bin:/bin", "HOME": str(user.home)}, check=False)
    assert done.returncode == 0 and out.exists(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["uid"] == user.uid != os.getuid()  # really another user
    return report["results"]


def attack_succeeded(results: list[dict], markers: Path) -> tuple[list[str], list[str], list[str]]:
    """(marker files, secrets handed back, connections a Client made) of one attack."""
    secrets = [s for r in results for key in ("client", "client_tls") for s in r[key].get("secrets", []) if s]
    secrets += [r[key]["reply"] for r in results for key in ("raw_run", "raw_run_function")
                if CANARY in r[key].get("reply", "")]
    connected = [f"{r['port']}/{key}" for r in results for key in ("client", "client_tls") if r[key]["connected"]]
    return sorted(p.name for p in markers.iterdir()), secrets, connected


def check_outcome(security: str, results: list[dict], markers: Path) -> None:
    marks, secrets, connected = attack_succeeded(results, markers)
    if security == "tls":
        assert marks == [], results
        assert not secrets and not connected, results
        assert all(CANARY not in json.dumps(r) for r in results)
    else:  # the same attack on a plain-TCP run: code runs as the pdrflow user, the password leaks
        assert any(m.startswith("client-") for m in marks), (marks, results)
        assert any(m.startswith("raw-") for m in marks), (marks, results)  # the raw client is a real attack too
        assert CANARY in secrets or any(CANARY in s for s in secrets), results


def no_key_material(*texts: str, roots: tuple[Path, ...]) -> None:
    """The run's private key is never printed nor left in a file (ledger, archive, scratch, logs)."""
    for text in texts:
        assert "PRIVATE KEY" not in text
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert b"PRIVATE KEY" not in path.read_bytes(), path
        assert not [p for p in root.rglob("*pdrflow-tls-*")], "credentials left behind"


def _config(tmp_path: Path, security: str, cluster: dict) -> Path:
    config = base_config(tmp_path, home=None, cluster={**cluster, "security": security})
    config["grid"]["density"] = [1.0e3]  # two models: one per worker
    if cluster["kind"] != "local":
        config["cluster"].pop("n_workers", None)
    return write_config(tmp_path / "run.yaml", config)


def _running_model(db: Path) -> bool:
    return ledger_rows(db, "select count(*) from attempts where kind='model' and outcome='running'")[0][0] >= 1


def _run_env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"  # the run's temporary files (worker space) where the key search below looks
    tmp.mkdir(exist_ok=True)
    return {"PDRFLOW_DB_PASSWORD": CANARY, "PDRFLOW_STANDIN_SECONDS": MODEL_SECONDS, "TMPDIR": str(tmp)}


def _stop(driver: subprocess.Popen[str]) -> str:
    """Ctrl-C: the driver stops its models and closes the cluster (and with it every worker job)."""
    driver.send_signal(signal.SIGINT)
    try:
        output, _ = driver.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        output, _ = driver.communicate()
        raise AssertionError(f"the driver did not stop:\n{output}") from None
    return output


def test_security_and_dashboard_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pdrflow.cluster.security import dashboard_is_local, local_dashboard_link, warn_if_dashboard_exposed
    from pdrflow.config import ConfigError, load_config

    assert all(dashboard_is_local(a) for a in ("127.0.0.1:8787", "localhost:0", "127.0.0.2:1", None))
    assert not any(dashboard_is_local(a) for a in (":8787", "0.0.0.0:8787", "node17:8787", "8787", "[::1]:1"))
    with caplog.at_level("WARNING", logger="pdrflow"):
        warn_if_dashboard_exposed("127.0.0.1:8787")
        assert not caplog.records
        warn_if_dashboard_exposed(":8787")  # (not bound here: this machine's rule is loopback only)
    assert [r.getMessage() for r in caplog.records] == [(
        "cluster.dashboard_address ':8787' listens beyond this machine's loopback: anyone who reaches it can read "
        "the grid and the worker logs (keep it 127.0.0.1:PORT and use the ssh tunnel)")]
    # Dask names the scheduler's network address; a loopback dashboard is reached at 127.0.0.1 (the tunnel's end)
    assert local_dashboard_link("http://10.1.2.3:8787/status", "127.0.0.1:8787") == "http://127.0.0.1:8787/status"
    assert local_dashboard_link("http://10.1.2.3:8787/status", ":8787") == "http://10.1.2.3:8787/status"
    for kind in ("local", "slurm", "allocation"):
        config = base_config(tmp_path, home=None, cluster={"kind": kind})
        config["cluster"].pop("n_workers", None)
        loaded = load_config(write_config(tmp_path / f"{kind}.yaml", config))
        assert loaded.cluster.security == "tls"  # the default for every kind
        if kind != "local":
            assert loaded.cluster.dashboard_address == "127.0.0.1:8787"
        config["cluster"]["security"] = "off"
        with pytest.raises(ConfigError, match="cluster.security"):
            load_config(write_config(tmp_path / f"{kind}-bad.yaml", config))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("security", ["tls", "none"])
def test_local_cluster_refuses_another_user(
    tmp_path: Path, attacker: SystemUser, markers: Path, security: str
) -> None:
    config = _config(tmp_path, security, {"kind": "local", "n_workers": 2})
    driver = start_run(config, env=_run_env(tmp_path))
    try:
        wait_for(lambda: _running_model(tmp_path / "ledger.sqlite"), 60, "a model running", driver)
        targets = listening(run_processes(driver.pid, set()))
        assert len(targets) >= 5, targets  # scheduler, dashboard, 2 nannies, 2 workers (+ their http)
        results = attack(attacker, targets, markers)
    finally:
        output = _stop(driver)
    check_outcome(security, results, markers)
    assert ("cluster.security: none" in output) == (security == "none"), output
    if security == "tls":
        no_key_material(output, roots=(tmp_path,))
        scratch = tmp_path / "scratch"
        assert stat.S_IMODE(scratch.stat().st_mode) == 0o700


def _slurm_cluster(tmp_path: Path) -> dict:
    return {"kind": "slurm", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00", "interface": "lo",
            "max_jobs": 2, "min_jobs": 2, "local_directory": str(tmp_path / "worker-space"),
            "log_directory": str(tmp_path / "worker-logs"), "dashboard_address": "127.0.0.1:0"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("security", ["tls", "none"])
def test_slurm_cluster_refuses_another_user(
    tmp_path: Path, attacker: SystemUser, markers: Path, slurm: Slurm, security: str
) -> None:
    config = _config(tmp_path, security, _slurm_cluster(tmp_path))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config, env={**_run_env(tmp_path), "SLURM_CONF": str(slurm.conf)})
    try:
        wait_for(lambda: ledger_rows(db, "select count(*) from attempts where kind='model' and outcome='running' "
                                         "and slurm_job_id is not null")[0][0] >= 2, 90, "models in 2 worker jobs",
                 driver)
        jobs = {row[0] for row in ledger_rows(db, "select external_id from worker_jobs")}
        targets = listening(run_processes(driver.pid, jobs))
        assert len(targets) >= 6, targets  # scheduler, dashboard; per job a nanny, a worker and its http
        if security == "tls":
            assert [p for p in tmp_path.glob(".pdrflow-tls-*")], "the worker jobs' credentials directory"
            (credentials,) = tmp_path.glob(".pdrflow-tls-*")
            assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
        results = attack(attacker, targets, markers)
    finally:
        output = _stop(driver)
    check_outcome(security, results, markers)
    wait_for(lambda: not {j for j, _, s in slurm.jobs() if s in ("PENDING", "RUNNING")} & jobs, 30, "jobs to end")
    if security == "tls":
        no_key_material(output, roots=(tmp_path,))
        assert stat.S_IMODE((tmp_path / "worker-logs").stat().st_mode) == 0o700
        scripts = " ".join(slurm.run("scontrol", "show", "job", job).stdout for job in jobs)
        assert "PRIVATE KEY" not in scripts


@pytest.mark.timeout(150)
@pytest.mark.parametrize("security", ["tls", "none"])
def test_slurm_runner_allocation_refuses_another_user(
    tmp_path: Path, attacker: SystemUser, markers: Path, slurm: Slurm, security: str
) -> None:
    config = _config(tmp_path, security, {"kind": "allocation", "interface": "lo",
                                          "dashboard_address": "127.0.0.1:0"})
    pdrflow = str(Path(sys.executable).parent / "pdrflow")
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-n", "4", "--mem-per-cpu=500M", f"--chdir={tmp_path}",
         f"--export=ALL,PDRFLOW={pdrflow}", f"--output={tmp_path / 'grid-%j.out'}",
         str(REPO / "slurm" / "pdrflow-allocation.sbatch"), str(config)],
        capture_output=True, text=True, timeout=30, env={**slurm.env, **_run_env(tmp_path)}, check=False,
        cwd=tmp_path)  # the submit directory: scheduler file and credentials go there
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    log = tmp_path / f"grid-{job_id}.out"
    try:
        wait_for(lambda: _running_model(tmp_path / "ledger.sqlite"), 90, "a model running in the allocation")
        targets = listening(run_processes(None, {job_id}))
        assert len(targets) >= 4, targets  # scheduler, dashboard, two workers (+ their http, srun's own)
        results = attack(attacker, targets, markers)
    finally:
        slurm.run("scancel", job_id)
        wait_for(lambda: job_id not in {j for j, _, _ in slurm.jobs()}, 60, "the allocation to end")
    check_outcome(security, results, markers)
    output = log.read_text() if log.exists() else ""
    assert ("cluster.security: none" in output) == (security == "none"), output
    if security == "tls":
        no_key_material(output, roots=(tmp_path,))
