"""Become one simulated machine's daemon: its host name, its /etc/hosts, its private scratch; then exec it.

Run by tests/services/cluster_box.py as the last link of an argv chain, no shell anywhere:
``nsenter --net=/run/netns/NS -- unshare --mount --uts --propagation private -- python node_launcher.py
--hostname node1 --hosts FILE --scratch DIR -- slurmd ...``. ``unshare`` gave this process a mount and a
UTS namespace of its own, so what is set here is seen by this process and everything it starts (slurmd,
its job steps, the Dask workers) and by nothing else: the scratch is the same path on every node and a
different tmpfs on each; the kernel frees it when the last process of the namespace exits (a killed node
loses its scratch, as a rebooted one does). The hosts file is bind-mounted over /etc/hosts in that
namespace only: the machine's own file is never written. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="mount a node's private scratch, then exec its daemon")
    parser.add_argument("--scratch", help="directory to cover with a private tmpfs")
    parser.add_argument("--hostname", help="this machine's host name (needs a UTS namespace of its own)")
    parser.add_argument("--hosts", help="a file to bind-mount over /etc/hosts (needs a mount namespace of its own)")
    parser.add_argument("--size", default="256m", help="tmpfs size limit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the daemon's argv")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no daemon command after --")
    if args.hostname:
        socket.sethostname(args.hostname)
    if args.hosts:
        subprocess.run(["mount", "--bind", args.hosts, "/etc/hosts"], check=True, timeout=30)
    if args.scratch:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size},mode=0755", "tmpfs", args.scratch],
                       check=True, timeout=30)
    os.execv(command[0], command)  # same PID: the box stops the daemon by the PID it started


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
