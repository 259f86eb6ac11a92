"""What one database connection and one SSH connection cost the machine, against the work done on them.

    .venv/bin/python benchmarks/bench_connections.py [--count 100] [--repeat 3]

A worker opens its ledger connections per transaction and its SFTP connection per archival (the
connection budgets, ``tasks/budget.py``), so each model pays for several connects. This measures, side by
side in one run on loopback servers (tests/services: PostgreSQL, OpenSSH sshd), the machine's CPU
(``/proc/stat``: every process, the servers' per-connection processes included, which a per-process
sampler misses when they are short-lived) per:

- ``db_connect_per_transaction``: a ledger read (``SELECT 1`` through pdrflow's engine) on a fresh
  connection each time, as a worker does now;
- ``db_one_connection``: the same reads on one kept connection;
- ``ssh_connect_per_operation``: pdrflow's SFTP storage opened, one ``stat`` of an absent path, closed;
- ``ssh_one_connection``: the same checks on one open storage.

The difference of each pair is the price of a connection. Run it on an idle machine: background load
is counted too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from helpers import base_config, write_config
from services.databases import APP_PASSWORD, remove_server, start_server
from services.sshd import Sshd


def machine_cpu_seconds() -> float:
    """CPU time of the whole machine (all processes, all cores) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def per_call_ms(count: int, call: Callable[[], Any]) -> float:
    time.sleep(0.5)  # let the servers' previous work settle
    started = machine_cpu_seconds()
    for _ in range(count):
        call()
    time.sleep(0.5)  # the servers' processes of the last calls end
    return 1000 * (machine_cpu_seconds() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from pdrflow.config.loading import load_config
    from pdrflow.ledger import Ledger
    from pdrflow.storage import open_storage

    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-connections-"))
    os.environ.update({"PDRFLOW_DB_PASSWORD": APP_PASSWORD, "SSH_AUTH_SOCK": ""})
    postgres = start_server("postgresql")
    sshd = Sshd(workdir=work / "sshd", host="127.0.0.1", max_startups=None)
    sshd.start()
    samples: dict[str, list[float]] = {"db_connect_per_transaction": [], "db_one_connection": [],
                                       "ssh_connect_per_operation": [], "ssh_one_connection": []}
    try:
        (work / "archive").mkdir()
        sftp = {"kind": "sftp", "host": "127.0.0.1", "port": sshd.port, "username": "root",
                "root": str(work / "archive"), "key_filename": str(sshd.client_key),
                "known_hosts": str(sshd.write_known_hosts(work / "known_hosts"))}
        document = base_config(work, home=None, database={"url": postgres.url}, storage=sftp)
        config = load_config(write_config(work / "run.yaml", document))
        ledger = Ledger(config.database.sqlalchemy_url(), poolclass=NullPool)  # a connection a transaction, as a worker
        kept = ledger.engine.connect()

        def read_fresh() -> None:
            with ledger.engine.connect() as connection:
                connection.execute(text("SELECT 1")).scalar()

        def read_kept() -> None:
            kept.execute(text("SELECT 1")).scalar()
            kept.commit()

        def check_fresh() -> None:
            storage = open_storage(config.storage)
            try:
                storage.stat("absent")
            finally:
                storage.close()

        storage = open_storage(config.storage)
        try:
            for _ in range(args.repeat):
                samples["db_connect_per_transaction"].append(per_call_ms(args.count, read_fresh))
                samples["db_one_connection"].append(per_call_ms(args.count, read_kept))
                samples["ssh_connect_per_operation"].append(per_call_ms(args.count, check_fresh))
                samples["ssh_one_connection"].append(per_call_ms(args.count, lambda: storage.stat("absent")))
        finally:
            storage.close()
            kept.close()
            ledger.close()
    finally:
        sshd.cleanup()
        remove_server(postgres)
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(json.dumps({
        "setup": {"count": args.count, "repeat": args.repeat, "cpus": os.cpu_count(),
                  "load_average_after": list(os.getloadavg())},
        "machine_cpu_ms_per_call": {name: [round(value, 2) for value in values] for name, values in samples.items()},
        "median_machine_cpu_ms_per_call": {name: round(value, 2) for name, value in medians.items()},
        "database_connection_ms": round(medians["db_connect_per_transaction"] - medians["db_one_connection"], 2),
        "ssh_connection_ms": round(medians["ssh_connect_per_operation"] - medians["ssh_one_connection"], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
