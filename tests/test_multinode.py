"""pdrflow on a SLURM cluster of several nodes (network namespaces on this machine, tests/services/cluster_box.py).

What a single-node SLURM cannot show: workers on other hosts reach the scheduler and the ledger over a
network (not loopback), each node's scratch is its own (an archival must run where the outputs are), and a
whole node can die with everything on it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import assert_consistent, cli, slow_null_home, wait_for
from multinode_support import attempt_places as _attempt_places
from multinode_support import computing_workers, driver_process, gated_null_home
from multinode_support import grid_config as _grid_config
from multinode_support import worker_address as _address
from services.cluster_box import ClusterBox, start_cluster_box
from services.databases import APP_PASSWORD, DatabaseServer
from services.sshd import Sshd

# A batch job as a Python script (no shell): where it ran, its address on the box's network, what its
# scratch holds; with "write", it leaves a file there first.
JOB = """#!{python}
import json, os, socket, sys
scratch, out, mode, login = sys.argv[1:5]
if mode == "write":
    with open(os.path.join(scratch, "written-on-" + socket.gethostname()), "w") as f:
        f.write("node-local\\n")
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((login, 9))  # no packet: only the route, i.e. this node's own address
with open(out, "w") as f:
    json.dump({{"node": os.environ["SLURMD_NODENAME"], "host": socket.gethostname(),
               "address": probe.getsockname()[0], "scratch": sorted(os.listdir(scratch))}}, f)
"""


def _box_names(suffix: str) -> set[str]:
    """The namespaces and links of the box named by ``suffix`` (other test modules' boxes may run alongside)."""
    listed = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=30).stdout
    linked = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True, timeout=30).stdout
    return ({line.split()[0] for line in listed.splitlines() if line.startswith(f"pdrflow-{suffix}-")}
            | set(re.findall(rf"\d+: (pdr(?:net)?{suffix}[0-9a-z]*)[@:]", linked)))


def _box_dirs(suffix: str) -> set[Path]:
    return set(Path("/tmp").glob(f"pdrflow-box-{suffix}-*"))


def _box_processes(suffix: str) -> set[int]:
    """Every process started for that box (its command line or working directory names the box's directory:
    slurmctld's slurmscriptd shows neither its config nor its arguments)."""
    mark = f"/pdrflow-box-{suffix}-"
    found = set()
    for process in psutil.process_iter(["cmdline", "cwd"]):
        if any(mark in arg for arg in [*(process.info["cmdline"] or ()), process.info["cwd"] or ""]):
            found.add(process.pid)
    return found


def _box_remains(suffix: str) -> tuple[set[str], set[Path], set[int]]:
    return _box_names(suffix), _box_dirs(suffix), _box_processes(suffix)


def _reachable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((address, port)) == 0


def _sbatch(box: ClusterBox, script: Path, node: str, out: Path, mode: str) -> str:
    submitted = box.run("sbatch", "--parsable", "-w", node, "-o", str(out.with_suffix(".log")), str(script),
                        str(box.scratch), str(out), mode, box.login_address)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def _wait_done(box: ClusterBox, job_ids: list[str]) -> None:
    wait_for(lambda: not set(box.run("squeue", "-h", "-o", "%i").stdout.split()) & set(job_ids), 60,
             f"jobs {job_ids} to end", interval=0.2)


def test_box_nodes_have_their_own_network_and_scratch_and_stop_leaves_nothing(tmp_path: Path) -> None:
    suffix = secrets.token_hex(3)
    assert _box_remains(suffix) == (set(), set(), set())
    cluster = start_cluster_box(3, suffix=suffix)
    try:
        shown = cluster.run("sinfo", "-N", "-h", "-o", "%N %t").stdout.split()
        assert shown == ["node1", "idle", "node2", "idle", "node3", "idle"]
        daemons = cluster.daemon_pids()
        assert len(daemons) == 4  # slurmctld and three slurmd
        names, dirs, started = _box_remains(suffix)  # what the check after stop() looks for, seen while it runs
        assert len(names) == 7  # three namespaces, three node links, the bridge
        assert dirs == {cluster.directory} and set(daemons) <= started
        listening = {c.laddr for c in psutil.Process(daemons[0]).net_connections("tcp") if c.status == "LISTEN"}
        assert listening == {(cluster.login_address, cluster.slurmctld_port)}  # slurmctld: the bridge only
        node3 = cluster.nodes["node3"]
        assert _reachable(node3, cluster.slurmd_port)
        cluster.cut_node("node3")
        assert not _reachable(node3, cluster.slurmd_port)  # cable out
        cluster.restore_node("node3")
        # Back within seconds: the first probe after the link returns may still wait on ARP (one CI run, loaded)
        deadline = time.monotonic() + 15
        while not _reachable(node3, cluster.slurmd_port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _reachable(node3, cluster.slurmd_port)
        script = tmp_path / "job.py"  # tmp_path: the shared filesystem, seen by every node
        script.write_text(JOB.format(python=sys.executable))
        script.chmod(0o755)
        _wait_done(cluster, [_sbatch(cluster, script, "node1", tmp_path / "write.json", "write")])
        listers = [_sbatch(cluster, script, node, tmp_path / f"{node}.json", "list") for node in cluster.nodes]
        _wait_done(cluster, listers)
        seen = {node: json.loads((tmp_path / f"{node}.json").read_text()) for node in cluster.nodes}
        for node, address in cluster.nodes.items():
            assert seen[node]["node"] == seen[node]["host"] == node  # its own host name
            assert seen[node]["address"] == address  # its own address on the bridge
        assert json.loads((tmp_path / "write.json").read_text())["scratch"] == ["written-on-node1"]
        # Same path, three directories: node1 still has its file, the others and the login node never saw it.
        assert seen["node1"]["scratch"] == ["written-on-node1"]
        assert seen["node2"]["scratch"] == seen["node3"]["scratch"] == []
        assert list(cluster.scratch.iterdir()) == []
    finally:
        cluster.stop()
    assert cluster.leftovers() == []
    assert not [pid for pid in daemons if os.path.exists(f"/proc/{pid}")]
    assert _box_remains(suffix) == (set(), set(), set())


def test_box_that_fails_to_start_halfway_leaves_nothing() -> None:
    suffix = secrets.token_hex(3)
    # The daemons and the network are up, but the nodes cannot be idle within no time: start gives up.
    with pytest.raises(RuntimeError, match="did not become idle"):
        start_cluster_box(2, idle_timeout=0, suffix=suffix)
    assert _box_remains(suffix) == (set(), set(), set())  # its slurmctld and slurmd were started, and are gone


def test_grid_over_three_nodes_is_archived_from_where_each_model_ran(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer
) -> None:
    ledger_server.reset()
    env = {"SLURM_CONF": str(box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD}
    home, gate = gated_null_home(tmp_path, null_home)  # released once a model computes on every node
    config = _grid_config(tmp_path, home, box, ledger_server, fuv=[10.0, 100.0, 1000.0])
    with driver_process(config, env) as driver:
        wait_for(lambda: len(computing_workers(ledger_server)) == 3, 150, "a model computing on every node", driver,
                 interval=0.3)
        gate.touch()
        output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 0, output
    # every job archived once, every ledger row's sha256 the bytes on disk, pdrflow verify exit 0
    summary = assert_consistent(config, env=env, models=6)
    assert summary["counts"] == {"archived": 6}
    places = _attempt_places(ledger_server)
    worker_hosts = {_address(worker) for *_, worker in places}
    assert worker_hosts <= set(box.nodes.values()) and len(worker_hosts) >= 2, places  # several nodes computed
    assert {host for *_, host, _ in places} <= set(box.nodes)  # the nodes' own host names
    ran_on = {job: _address(worker) for job, kind, outcome, _, worker in places if kind == "model" and outcome == "ok"}
    archived_from = {job: _address(worker) for job, kind, outcome, _, worker in places if kind == "archive"}
    assert archived_from == ran_on  # each archival ran on the node whose scratch held the outputs
    assert list(box.scratch.iterdir()) == []  # none of the nodes' scratch ever showed on the login node


def test_node_killed_mid_grid_loses_nothing_and_archives_each_model_once(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer
) -> None:
    """A whole node dies (its slurmd, its Dask worker, the model it computes, its scratch): the grid finishes
    on the other nodes in the same run, each model archived exactly once, the archive verified."""
    ledger_server.reset()
    env = {"SLURM_CONF": str(box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD}
    home = slow_null_home(tmp_path, null_home, 3)
    config = _grid_config(tmp_path, home, box, ledger_server, fuv=[10.0, 100.0, 1000.0])
    computing: list[str] = []  # addresses of the nodes computing a model, in the order the runs started

    def computing_on_two_nodes() -> bool:
        from sqlalchemy.exc import ProgrammingError

        try:
            places = _attempt_places(ledger_server)
        except ProgrammingError:  # the driver has not created the ledger's tables yet
            return False
        computing[:] = [_address(worker) for _, kind, outcome, _, worker in places
                        if kind == "model" and outcome == "running" and worker]
        return len(set(computing)) >= 2  # then one node dies and another still computes

    killed: list[int] = []
    victim = ""
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, **env, "COLUMNS": "200"})
    try:
        wait_for(computing_on_two_nodes, 120, "models running on two nodes", driver, interval=0.3)
        # the node whose model started last: it is still computing when it dies a few ms from now
        victim = next(name for name, address in box.nodes.items() if address == computing[-1])
        killed = box.kill_node(victim)
        assert killed and not box.node_pids(victim)
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
        if killed:
            box.revive_node(victim)  # the module's other tests get three nodes again
    assert driver.returncode == 0, output
    summary = assert_consistent(config, env=env, models=6)
    places = _attempt_places(ledger_server)
    victim_address = box.nodes[victim]
    cut = {job for job, kind, outcome, _, worker in places
           if kind == "model" and outcome != "ok" and worker and _address(worker) == victim_address}
    assert cut, places  # the model computing on the victim was cut short ...
    lost_elsewhere = [p for p in places if p[1] == "model" and p[2] != "ok" and p[4]
                      and _address(p[4]) != victim_address]
    assert not lost_elsewhere, places  # ... and nothing on the nodes that lived
    archived = {job: _address(worker) for job, kind, outcome, _, worker in places if kind == "archive" and outcome == "ok"}
    assert all(archived[job] != victim_address for job in cut)  # computed again and archived on a live node
    assert sum(summary["model_runs"].values()) > 6


def test_archival_retries_after_an_archive_outage_stay_on_the_node_that_holds_the_outputs(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer
) -> None:
    """The archive server goes down as the models on all three nodes finish: every archival fails and is tried
    again after its backoff. Each retry must run where the outputs are (node-local scratch), or it finds them
    gone and the model is computed again: here no model is computed twice."""
    ledger_server.reset()
    env = {"SLURM_CONF": str(box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD, "SSH_AUTH_SOCK": "",
           "PDRFLOW_SFTP_PASSWORD": ""}
    home, gate = gated_null_home(tmp_path, null_home)  # released once a model computes on every node
    with Sshd(workdir=tmp_path / "sshd", host=box.login_address) as server:  # on the bridge: every node reaches it
        config = _grid_config(tmp_path, home, box, ledger_server, fuv=[10.0, 100.0, 1000.0])
        document = yaml.safe_load(config.read_text())
        document["storage"] = {
            "kind": "sftp", "host": server.host, "port": server.port, "username": "root",
            "root": str(tmp_path / "archive"), "key_filename": str(server.client_key),
            "known_hosts": str(server.write_known_hosts(tmp_path / "known")), "connect_timeout": 3,
            "operation_timeout": 5}
        document["run"].update(archive_attempts=30, archive_backoff_initial=0.3, archive_backoff_max=1.0)
        config.write_text(yaml.safe_dump(document))

        with driver_process(config, env) as driver:
            wait_for(lambda: len(computing_workers(ledger_server)) == 3, 150, "a model computing on every node",
                     driver, interval=0.3)
            server.kill()  # down before any model finishes: the first archival of each fails
            gate.touch()
            wait_for(lambda: sum(1 for _, kind, outcome, _, _ in _attempt_places(ledger_server)
                                 if kind == "archive" and outcome not in ("ok", "running")) >= 6,
                     90, "archivals failing on the nodes", driver, interval=0.2)
            server.start()  # same port, same host key
            output, _ = driver.communicate(timeout=180)
        assert driver.returncode == 0, output
        summary = assert_consistent(config, env=env, models=6)  # verify reads the archive back: sshd still up
    assert summary["counts"] == {"archived": 6}
    places = _attempt_places(ledger_server)
    models = [(job, _address(worker)) for job, kind, _, _, worker in places if kind == "model"]
    assert len(models) == 6, places  # no model computed twice
    ran_on = dict(models)
    assert len(set(ran_on.values())) == 3, places
    archivals = [(job, outcome, _address(worker)) for job, kind, outcome, _, worker in places if kind == "archive"]
    assert sum(outcome != "ok" for _, outcome, _ in archivals) >= 6, archivals  # the outage was crossed
    assert all(node == ran_on[job] for job, _, node in archivals), (ran_on, archivals)  # each try where its outputs are


def _loopback_archive(tmp_path: Path, box: ClusterBox, ledger_server: DatabaseServer,
                      sshd: Sshd) -> tuple[dict[str, str], dict[str, object]]:
    """An empty ledger, the run's environment, and an SFTP archive on the login node's loopback (sshd
    listens on 127.0.0.1 of the root namespace: no compute node has a route to it)."""
    ledger_server.reset()
    env = {"SLURM_CONF": str(box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD, "SSH_AUTH_SOCK": "",
           "PDRFLOW_SFTP_PASSWORD": ""}
    archive = tmp_path / "archive"
    archive.mkdir()
    storage = {"kind": "sftp", "host": sshd.host, "port": sshd.port, "username": "root", "root": str(archive),
               "key_filename": str(sshd.client_key), "known_hosts": str(sshd.write_known_hosts(tmp_path / "known")),
               "connect_timeout": 3, "operation_timeout": 5}
    return env, storage


def test_compute_nodes_without_a_route_to_the_archive_archive_through_workers_on_the_driver_host(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer, sshd: Sshd
) -> None:
    """The SFTP archive listens on the login node's loopback: no compute node can reach it. With
    cluster.archive_workers the outputs move to scratch.staging (shared) and archivals run on this host."""
    env, storage = _loopback_archive(tmp_path, box, ledger_server, sshd)
    home = slow_null_home(tmp_path, null_home, 1.0)
    config = _grid_config(tmp_path, home, box, ledger_server, fuv=[10.0, 100.0])
    document = yaml.safe_load(config.read_text())
    document["storage"] = storage
    document["cluster"]["archive_workers"] = 2
    document["scratch"]["staging"] = str(tmp_path / "staging")
    config.write_text(yaml.safe_dump(document))
    done = cli("run", str(config), env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = assert_consistent(config, env=env, models=4)
    assert summary["counts"] == {"archived": 4}
    places = _attempt_places(ledger_server)
    models = {host for _, kind, _, host, _ in places if kind == "model"}
    archivals = {(outcome, host) for _, kind, outcome, host, _ in places if kind == "archive"}
    assert models <= set(box.nodes), places  # computed on the nodes ...
    assert archivals == {("ok", socket.gethostname())}, places  # ... archived here, each at the first try
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == []  # staged outputs gone once archived
    assert list(box.scratch.iterdir()) == []


def test_without_archive_workers_nodes_that_cannot_reach_the_archive_fail_the_archival_only(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer, sshd: Sshd
) -> None:
    """The same archive with archivals on the compute nodes: every model is computed, every archival fails
    (connection refused on the node's own loopback): failed_storage, exit 1, no model computed twice."""
    env, storage = _loopback_archive(tmp_path, box, ledger_server, sshd)
    config = _grid_config(tmp_path, null_home, box, ledger_server, fuv=[10.0])
    document = yaml.safe_load(config.read_text())
    document["storage"] = storage
    document["run"]["archive_attempts"] = 1
    config.write_text(yaml.safe_dump(document))
    done = cli("run", str(config), env=env, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    shown = cli("status", str(config), "--json", env=env)
    assert json.loads(shown.stdout)["counts"] == {"failed_storage": 2}, shown.stdout + shown.stderr
    places = _attempt_places(ledger_server)
    assert sorted(outcome for _, kind, outcome, _, _ in places if kind == "model") == ["ok", "ok"]
