"""A multi-node SLURM cluster on this one machine: network namespaces as compute nodes, a bridge as their network.

The root namespace is the login node: a Linux bridge ``pdrnet<suffix>`` with 198.18.N.1/24 (the benchmark
range 198.18.0.0/15, never a real network), slurmctld and the client commands. Node K is a network
namespace ``pdrflow-<suffix>-nodeK`` with one veth whose inside end has the bridge's name (so one Dask
``interface:`` value is right on the login node and on every node) and the address 198.18.N.(10+K); its
slurmd runs inside it, in a mount namespace of its own with a private tmpfs over the box's ``scratch``
path (tests/services/node_launcher.py). Everything else of the filesystem is shared, as on a cluster.

Names carry a random suffix and the subnet is one no interface uses yet, so two boxes never collide.
Traffic goes to loopback and the bridge only; other interfaces, routes and firewall rules are not
touched. Daemons are stopped by PID; ``stop()`` removes namespaces, links and files even after a start
that failed halfway. Root only: outside CI a machine without the capability skips, in CI it fails.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import processes
from .databases import free_port, require
from .marks import require_marked
from .slurm import _ensure_munge, daemon_settings

NODE_CPUS = 1  # one worker job per node: a grid's jobs spread over the nodes, not packed on one
NODE_MEMORY_MB = 2048
PREFIX = "198.18"  # RFC 2544 benchmark range, /15: 198.18.0.0 - 198.19.255.255
LAUNCHER = Path(__file__).with_name("node_launcher.py")


@dataclass
class _Node:
    name: str  # the SLURM node name
    address: str
    namespace: str  # the network namespace
    link: str  # the veth end on the bridge (login node side)
    slurmd: subprocess.Popen[bytes] | None = None


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done


def _stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Wait for a daemon we started (SIGTERM sent) and reap it; SIGKILL after ``timeout``."""
    if process is None:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _refuse(message: str) -> None:
    """A missing capability: a skip outside CI, a failure in CI (as ``privileged`` in tests/helpers.py)."""
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    pytest.skip(message)


def _free_subnet() -> int:
    """A third octet N with no 198.18.N.x address on any interface here: 0 when free, else a random free one."""
    listed = _ip("-o", "-4", "addr", "show").stdout
    used = {int(word.split(".")[2]) for word in listed.split() if word.startswith(f"{PREFIX}.")}
    if 0 not in used:
        return 0
    free = [n for n in range(1, 256) if n not in used]
    if not free:
        raise RuntimeError(f"every {PREFIX}.N.0/24 is in use here")
    return random.choice(free)


@dataclass
class ClusterBox:
    directory: Path
    suffix: str
    subnet: int  # the N of 198.18.N.0/24
    size: int
    slurmctld_port: int
    slurmd_port: int
    _nodes: list[_Node] = field(default_factory=list)
    _slurmctld: subprocess.Popen[bytes] | None = None
    _bridge_made: bool = False
    partition: str = "debug"
    cpus: int = NODE_CPUS  # per node: more lets one node hold several worker jobs (benchmarks/bench_scale.py)
    memory_mb: int = NODE_MEMORY_MB  # per node, as slurm.conf's RealMemory (not checked against this machine's)

    # ---- what tests read ----------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def interface(self) -> str:
        """The bridge on the login node and each node's veth: one name for Dask's ``interface:``."""
        return f"pdrnet{self.suffix}"

    @property
    def login_address(self) -> str:
        return f"{PREFIX}.{self.subnet}.1"

    @property
    def scratch(self) -> Path:
        """The node-local scratch path: the same on every node, a private tmpfs on each."""
        return self.directory / "scratch"

    @property
    def nodes(self) -> dict[str, str]:
        """Node name -> address."""
        return {node.name: node.address for node in self._nodes}

    def daemon_pids(self) -> list[int]:
        """slurmctld's and every running slurmd's PID."""
        started = [self._slurmctld, *(node.slurmd for node in self._nodes)]
        return [process.pid for process in started if process is not None and process.poll() is None]

    def namespace(self, name: str) -> str:
        return self._node(name).namespace

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A client command on the login node (sinfo, sbatch, squeue, scancel ...)."""
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=self.env,
                              check=False, stdin=subprocess.DEVNULL)

    def node_states(self) -> dict[str, str]:
        listed = self.run("sinfo", "-N", "-h", "-o", "%N %t").stdout
        return dict(line.split() for line in listed.splitlines() if len(line.split()) == 2)

    def wait_idle(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        wanted = set(names or self.nodes)
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if all(states.get(name) == "idle" for name in wanted):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the box's nodes did not become idle (sinfo says {states})")

    # ---- faults -------------------------------------------------------------------------------

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process in the node's namespace (its slurmd, job steps, Dask workers, models);
        its scratch tmpfs goes with its mount namespace. The network stays; SLURM marks the node down
        after SlurmdTimeout. Returns the PIDs killed."""
        node = self._node(name)
        killed: list[int] = []
        for _ in range(50):  # a dying step may fork once more: look again until the namespace is empty
            pids = self._pids(node)
            if not pids:
                break
            processes.signal_all(pids, signal.SIGKILL)
            killed += pids
            processes.wait_gone(pids, 10)
        if node.slurmd is not None:
            node.slurmd.wait(timeout=30)  # our child: reap it
            node.slurmd = None
        return killed

    def revive_node(self, name: str) -> None:
        """Boot a killed node again: a new slurmd in a new mount namespace with an empty scratch."""
        node = self._node(name)
        if node.slurmd is not None or self._pids(node):
            raise RuntimeError(f"{name} is still running")
        self._start_slurmd(node)
        self.wait_idle([name])

    def cut_node(self, name: str) -> None:
        """The node's network cable out: its veth on the bridge down (processes keep running)."""
        _ip("link", "set", self._node(name).link, "down")

    def restore_node(self, name: str) -> None:
        _ip("link", "set", self._node(name).link, "up")

    # ---- lifecycle ----------------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        for node in self._nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in this box (nodes: {', '.join(self.nodes)})")

    def node_pids(self, name: str) -> list[int]:
        """Every process in the node's network namespace."""
        return self._pids(self._node(name))

    @staticmethod
    def _pids(node: _Node) -> list[int]:
        listed = _ip("netns", "pids", node.namespace, check=False)
        return [int(word) for word in listed.stdout.split() if word.isdigit()] if listed.returncode == 0 else []

    def _build_network(self) -> None:
        bridge = self.interface
        _ip("link", "add", bridge, "type", "bridge")
        self._bridge_made = True
        _ip("addr", "add", f"{self.login_address}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for node in self._nodes:
            _ip("netns", "add", node.namespace)
            # the inside end is born in the namespace, already named like the bridge
            _ip("link", "add", node.link, "type", "veth", "peer", "name", bridge, "netns", node.namespace)
            _ip("link", "set", node.link, "master", bridge, "up")
            _ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", bridge)
            _ip("-n", node.namespace, "link", "set", bridge, "up")
            _ip("-n", node.namespace, "link", "set", "lo", "up")

    def _write_conf(self) -> None:
        d = self.directory
        nodes = "\n".join(f"NodeName={node.name} NodeAddr={node.address} CPUs={self.cpus} "
                          f"RealMemory={self.memory_mb} State=UNKNOWN" for node in self._nodes)
        names = ",".join(self.nodes)
        # %n: every slurmd on this one machine needs its own spool, pid and log file
        self.conf.write_text(f"""ClusterName=pdrflowbox
SlurmctldHost=login({self.login_address})
SlurmctldPort={self.slurmctld_port}
SlurmdPort={self.slurmd_port}
CommunicationParameters=NoCtldInAddrAny
{daemon_settings(d, per_node="-%n")}SlurmdTimeout=10
{nodes}
PartitionName={self.partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP
""")

    def _launch(self, name: str, argv: list[str], *, hostname: str, network: str | None = None,
                scratch: bool = False) -> subprocess.Popen[bytes]:
        """A daemon as one machine of the box: its own host name and /etc/hosts (and on a node its network and
        private scratch). No shell: nsenter execs unshare execs the launcher, which execs the daemon (one PID)."""
        chain = ["nsenter", f"--net=/run/netns/{network}", "--"] if network else []
        chain += ["unshare", "--mount", "--uts", "--propagation", "private", "--", sys.executable, str(LAUNCHER),
                  "--hostname", hostname, "--hosts", str(self.directory / "hosts")]
        if scratch:
            chain += ["--scratch", str(self.scratch)]
        log = (self.directory / f"{name}.out").open("ab")
        try:
            return subprocess.Popen([*chain, "--", *argv], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    env=self.env, cwd=self.directory)
        finally:
            log.close()

    def _start_slurmd(self, node: _Node) -> None:
        node.slurmd = self._launch(f"slurmd-{node.name}", [
            shutil.which("slurmd") or "/usr/sbin/slurmd", "-D", "-N", node.name, "-f", str(self.conf)],
            hostname=node.name, network=node.namespace, scratch=True)

    def start(self, idle_timeout: float = 60.0) -> None:
        for sub in ("state", "scratch", *(f"spool-{node.name}" for node in self._nodes)):
            (self.directory / sub).mkdir()
        # every machine's /etc/hosts (bind-mounted in its own mount namespace): slurmctld binds to what
        # "login" resolves to (NoCtldInAddrAny), i.e. the bridge address and not every interface
        (self.directory / "hosts").write_text("127.0.0.1 localhost\n" + f"{self.login_address} login\n" + "".join(
            f"{node.address} {node.name}\n" for node in self._nodes))
        self._build_network()
        self._write_conf()
        self._slurmctld = self._launch("slurmctld", [
            shutil.which("slurmctld") or "/usr/sbin/slurmctld", "-D", "-c", "-f", str(self.conf)], hostname="login")
        for node in self._nodes:
            self._start_slurmd(node)
        try:
            self.wait_idle(timeout=idle_timeout)
        except RuntimeError as error:
            logs = "\n".join(f"{path.name}: {path.read_text()[-1500:]}" for path in
                             sorted([*self.directory.glob("*.log"), *self.directory.glob("*.out")]))
            raise RuntimeError(f"{error}\n{logs}") from None

    def stop(self) -> None:
        """Stop every daemon by PID, then remove namespaces, links and files; safe after a partial start.

        Every step runs whatever the one before did: a box must never outlive its test."""
        if self._slurmctld is not None and self._slurmctld.poll() is None:
            try:
                self.run("scancel", "--user", "root", timeout=10)
            except subprocess.TimeoutExpired:
                pass  # a controller that does not answer: its jobs die with the namespaces below
        for node in self._nodes:
            if node.slurmd is not None and node.slurmd.poll() is None:
                node.slurmd.terminate()
        for node in self._nodes:
            _stop_process(node.slurmd, 15)
            node.slurmd = None
            self.kill_node(node.name)  # job steps and workers left in the namespace
        if self._slurmctld is not None:
            forked = processes.descendants(self._slurmctld.pid)  # its slurmscriptd
            self._slurmctld.terminate()
            _stop_process(self._slurmctld, 20)
            processes.wait_or_kill(forked, 10)
            self._slurmctld = None
        for node in self._nodes:
            _ip("link", "del", node.link, check=False)  # takes its peer in the namespace with it
            _ip("netns", "del", node.namespace, check=False)
        if self._bridge_made:
            _ip("link", "del", self.interface, check=False)
            self._bridge_made = False
        shutil.rmtree(self.directory, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this box still exists (namespaces, links, processes, files): empty after ``stop()``."""
        found = [line for line in _ip("netns", "list").stdout.splitlines() if self.suffix in line]
        found += [line for line in _ip("-o", "link", "show").stdout.splitlines() if self.suffix in line]
        found += [f"slurmd {node.name} pid {node.slurmd.pid}" for node in self._nodes
                  if node.slurmd is not None and processes.running(node.slurmd.pid)]
        if self._slurmctld is not None and processes.running(self._slurmctld.pid):
            found.append(f"slurmctld pid {self._slurmctld.pid}")
        if self.directory.exists():
            found.append(str(self.directory))
        return found


def start_cluster_box(size: int = 3, idle_timeout: float = 60.0, cpus: int = NODE_CPUS,
                      memory_mb: int = NODE_MEMORY_MB, suffix: str | None = None) -> ClusterBox:
    """``size`` nodes (node1 ... nodeN) idle under their own slurmctld; ``stop()`` it when done.
    ``cpus`` and ``memory_mb``: what each node offers SLURM (slurmd takes slurm.conf's word for it).
    ``suffix`` (6 hex digits, random by default) names the box's namespaces, links and directory, so a test can
    look for what one box left even when its start failed and other boxes run alongside."""
    require_marked("SLURM", "slurm")
    require(shutil.which("slurmctld") or "/usr/sbin/slurmctld", "SLURM (Debian packages slurmctld slurmd munge)")
    require(shutil.which("munged") or "/usr/sbin/munged", "munge (Debian package munge)")
    require(shutil.which("ip") or "/usr/sbin/ip", "iproute2 (Debian package iproute2)")
    require(shutil.which("unshare") or "/usr/bin/unshare", "unshare (Debian package util-linux)")
    require(shutil.which("nsenter") or "/usr/bin/nsenter", "nsenter (Debian package util-linux)")
    if os.geteuid() != 0:
        _refuse("the cluster box needs root (network namespaces, a bridge, tmpfs mounts)")
    if not 1 <= size <= 200:
        raise ValueError(f"a box has 1 to 200 nodes, not {size}")
    _ensure_munge()
    if suffix is None:
        suffix = secrets.token_hex(3)
    elif not re.fullmatch(r"[0-9a-f]{6}", suffix):
        raise ValueError(f"a box suffix is 6 hex digits, not {suffix!r}")
    # interface names: pdrnet + 6 = 12, pdr + 6 + n + K <= 13 characters (max 15)
    directory = Path(tempfile.mkdtemp(prefix=f"pdrflow-box-{suffix}-"))
    directory.chmod(0o755)
    subnet = _free_subnet()
    box = ClusterBox(directory, suffix, subnet, size, free_port(), free_port(), cpus=cpus, memory_mb=memory_mb)
    box._nodes = [_Node(f"node{k}", f"{PREFIX}.{subnet}.{10 + k}", f"pdrflow-{suffix}-node{k}", f"pdr{suffix}n{k}")
                  for k in range(1, size + 1)]
    try:
        box.start(idle_timeout)
    except BaseException as error:
        box.stop()
        if "Operation not permitted" in str(error):  # root without CAP_NET_ADMIN/CAP_SYS_ADMIN (a container)
            _refuse(f"the cluster box needs network namespaces and mounts: {error}")
        raise
    return box
