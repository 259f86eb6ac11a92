"""A real single-node SLURM (Debian's slurmctld, slurmd, munge) for the tests, on loopback.

Every daemon gets its own config, ports, state and spool dirs under a temp dir; clients find it
through ``SLURM_CONF``. Daemons are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import processes
from .databases import free_port, require
from .marks import require_marked

NODE_CPUS = 4
NODE_MEMORY_MB = 8192


def _read_pid(path: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")


@dataclass
class Slurm:
    directory: Path
    conf: Path
    partition: str = "debug"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=self.env, check=False)

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every job in the queue."""
        done = self.run("squeue", "-h", "-o", "%i|%j|%T")
        return [tuple(line.split("|")) for line in done.stdout.splitlines() if line]  # type: ignore[misc]

    def stop(self) -> None:
        self.run("scancel", "--user", "root")
        for name in ("slurmd.pid", "slurmctld.pid"):
            path = self.directory / name
            if path.exists():
                pid = int(path.read_text().split()[0])
                processes.stop([pid], signal.SIGTERM, 20)


def _ensure_munge() -> None:
    running = subprocess.run(["pgrep", "-x", "munged"], capture_output=True, check=False)
    if running.returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True, timeout=30)


def daemon_settings(directory: Path, per_node: str = "") -> str:
    """The slurm.conf lines every test SLURM shares: root daemons, munge, files below ``directory``
    (``per_node``, e.g. "-%n", when several slurmd share one machine), no accounting, short timeouts."""
    d = directory
    return f"""SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / f'spool{per_node}'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / f'slurmd{per_node}.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / f'slurmd{per_node}.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d / 'jobcomp.log'}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
SchedulerType=sched/backfill
MinJobAge=5
KillWait=2
InactiveLimit=0
MessageTimeout=10
"""


def start_slurm(extra_nodes: list[tuple[str, str]] | None = None) -> Slurm:
    """``extra_nodes``: (name, NodeAddr) of more nodes in the partition, configured only (no slurmd: DOWN),
    for what sinfo and scontrol report about a partition spanning other hosts."""
    require_marked("SLURM", "slurm")
    extra = extra_nodes or []
    require(shutil.which("slurmctld") or "/usr/sbin/slurmctld", "SLURM (Debian packages slurmctld slurmd munge)")
    require(shutil.which("munged") or "/usr/sbin/munged", "munge (Debian package munge)")
    _ensure_munge()
    directory = Path(tempfile.mkdtemp(prefix="pdrflow-slurm-"))
    for sub in ("state", "spool"):
        (directory / sub).mkdir()
    conf = directory / "slurm.conf"
    # Before the localhost line: slurmd 22.05 -N localhost dies ("Duplicated NodeHostName") on a node listed after it.
    extra_lines = "".join(f"NodeName={name} NodeAddr={address} CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} "
                          "State=DOWN\n" for name, address in extra)
    members = ",".join(["localhost", *(name for name, _ in extra)])
    conf.write_text(f"""ClusterName=pdrflowtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
{daemon_settings(directory)}{extra_lines}NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes={members} Default=YES MaxTime=INFINITE State=UP
""")
    slurm = Slurm(directory, conf)
    try:
        for argv in (["slurmctld", "-c", "-f", str(conf)], ["slurmd", "-N", "localhost", "-f", str(conf)]):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=slurm.env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{argv[0]} failed to start: {done.stderr.strip()}")
        _read_pid(directory / "slurmctld.pid")
        _read_pid(directory / "slurmd.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = slurm.run("sinfo", "-h", "-n", "localhost", "-o", "%t").stdout.strip()
            if state == "idle":
                return slurm
            time.sleep(0.2)
        raise RuntimeError(f"the SLURM node did not become idle (sinfo says {state!r})")
    except BaseException:
        slurm.stop()
        raise
