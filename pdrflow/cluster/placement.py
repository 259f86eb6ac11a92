"""Where a run's workers may run: all on this host, or (maybe) on others.

It matters for an SQLite ledger: worker tasks write it directly, and SQLite is safe for the processes
of one host only. ``cluster.kind: local`` is this host; ``slurm`` is every node of the partition the
worker jobs would land in (asked of SLURM before any sbatch); ``allocation`` is the nodes of the
allocation this process runs in.

A node is this host when its NodeAddr is: a loopback address, or an address a socket on this host can
bind (the kernel allows that only for its own addresses), every address a NodeAddr name resolves to;
a NodeAddr that does not resolve counts when its NodeHostname is this host's name.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ClusterConfig
from ..errors import ConfigError

SHOWN_NODES = 3  # other-host nodes named in a message; the rest are counted


@dataclass(frozen=True)
class Node:
    name: str
    address: str  # SLURM's NodeAddr
    hostname: str  # SLURM's NodeHostname


@dataclass(frozen=True)
class Placement:
    one_host: bool
    what: str  # for a message: where the workers run, and why that is (or is not) one host


def _nonlocal_bind_allowed(family: socket.AddressFamily) -> bool:
    """net.ipv4/ipv6.ip_nonlocal_bind = 1 lets any address be bound: then binding proves nothing."""
    name = "ipv6" if family == socket.AF_INET6 else "ipv4"
    try:
        return Path(f"/proc/sys/net/{name}/ip_nonlocal_bind").read_text().strip() not in ("", "0")
    except OSError:
        return False


def _bindable(family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> bool:
    if ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]).is_loopback:
        return True
    if _nonlocal_bind_allowed(family):
        return False
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((sockaddr[0], 0, *sockaddr[2:]))
    except OSError:  # EADDRNOTAVAIL: not an address of this host
        return False
    return True


def _own_names() -> set[str]:
    name = socket.gethostname()
    return {name, name.split(".", 1)[0], socket.getfqdn()}


def is_this_host(address: str, hostname: str = "") -> bool:
    """Whether a node reached at ``address`` (an IP address or a name) is the host this process runs on."""
    try:
        found = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return bool(hostname) and hostname in _own_names()
    return bool(found) and all(_bindable(family, sockaddr) for family, _, _, _, sockaddr in found)


def partition_nodes(queue: str | None) -> tuple[str, list[Node]]:
    """The partition worker jobs would land in (``queue`` or the default one) and its nodes, from sinfo."""
    from .slurm import _slurm, inspect_partition

    partition = inspect_partition(queue).name  # an unknown partition: its ConfigError, naming the ones there are
    if shutil.which("sinfo") is None:
        raise ConfigError("cluster.kind: slurm, but SLURM's sinfo is not on PATH")
    # One line per node: name, NodeAddr, NodeHostname.
    shown = _slurm("sinfo", "-h", "-N", "-p", partition, "-o", "%N|%o|%n")
    if shown.returncode != 0:
        raise ConfigError(f"cluster.queue: sinfo could not list the nodes of partition {partition}: "
                          f"{shown.stderr.strip() or shown.returncode}")
    nodes = {}
    for line in shown.stdout.splitlines():
        name, _, rest = line.strip().partition("|")
        address, _, hostname = rest.partition("|")
        if name:
            nodes[name] = Node(name, address or name, hostname or name)
    return partition, list(nodes.values())


def _listed(nodes: list[Node]) -> str:
    named = ", ".join(f"{node.name} at {node.address}" for node in nodes[:SHOWN_NODES])
    return named + (f" and {len(nodes) - SHOWN_NODES} more" if len(nodes) > SHOWN_NODES else "")


def slurm_placement(queue: str | None) -> Placement:
    partition, nodes = partition_nodes(queue)
    if not nodes:
        return Placement(False, f"partition {partition} lists no nodes, so where workers would run is unknown")
    others: list[Node] = []
    for node in nodes:
        if not is_this_host(node.address, node.hostname):
            others.append(node)
            if len(others) > SHOWN_NODES:
                break  # enough to refuse; no DNS lookups for the rest of a big partition
    if others:
        more = " (or more)" if len(others) > SHOWN_NODES else ""
        return Placement(False, f"cluster.kind: slurm puts workers on the nodes of partition {partition}, on other "
                                f"hosts than this one: {_listed(others[:SHOWN_NODES])}{more}")
    return Placement(True, f"one host: every node of partition {partition} is this host ({_listed(nodes)})")


def allocation_placement(environ: Mapping[str, str]) -> Placement:
    counts = [environ.get(name, "").strip() for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES")]
    nodes = max((int(count) for count in counts if count.isdigit()), default=1)
    if nodes > 1:
        return Placement(False, f"cluster.kind: allocation runs workers on the {nodes} nodes of this allocation")
    return Placement(True, "one host: this allocation has one node")


def worker_placement(cluster: ClusterConfig, environ: Mapping[str, str] = os.environ) -> Placement:
    """Where the workers of ``cluster`` run: all on this host (``one_host``), or possibly elsewhere, as its
    kind's ``placement`` says."""
    from ..config.kinds import CLUSTER_KINDS

    where = CLUSTER_KINDS[cluster.kind].placement
    if where is None:
        return Placement(False, f"cluster.kind: {cluster.kind} does not say where its workers run")
    return where(cluster, environ)
