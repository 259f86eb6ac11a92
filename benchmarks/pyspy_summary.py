"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) per process kind.

    .venv/bin/python benchmarks/pyspy_summary.py profile.txt [--top 25] [--match pdrflow]

For each process group (driver = the process py-spy started; workers = the rest) prints the
samples per function: ``self`` (on top of the stack) and ``total`` (anywhere in the stack).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path


def kind_of(root: str, first_pid: str) -> str:
    pid = re.match(r"process (\d+)", root)
    if pid is None:
        return "?"
    if pid.group(1) == first_pid:
        return "driver"
    if "spawn_main" in root or "multiprocessing" in root:
        return "worker/nanny"
    return "other:" + root.split(":", 1)[-1][:60]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only count 'total' for frames containing this")
    args = parser.parse_args()
    lines = Path(args.profile).read_text().splitlines()
    first_pid = re.match(r"process (\d+)", lines[0]).group(1) if lines else ""
    self_counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total_counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    samples: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        pids = re.findall(r"process (\d+):", stack)
        kind = "driver" if pids[-1:] == [first_pid] else ("worker" if "spawn_main" in stack else "other")
        # drop the process frames (their command lines may contain ';')
        stack = re.sub(r'process \d+:"[^"]*";?', "", stack)
        frames = [f for f in stack.split(";") if f] or ["?"]
        n = int(count)
        samples[kind] += n
        self_counts[kind][frames[-1]] += n
        for frame in set(frames):
            if args.match in frame:
                total_counts[kind][frame] += n
    for kind, n in samples.most_common():
        print(f"== {kind}: {n} samples")
        print("  -- self")
        for frame, c in self_counts[kind].most_common(args.top):
            print(f"  {c:6d} {100 * c / n:5.1f}%  {frame}")
        print("  -- total")
        for frame, c in total_counts[kind].most_common(args.top):
            print(f"  {c:6d} {100 * c / n:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
