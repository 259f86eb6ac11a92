"""SFTP archival speed, side by side in one run; prints one JSON document.

    .venv/bin/python benchmarks/bench_sftp.py [--size-mb 200] [--repeat 5] [--rtt-ms 0 20]

It starts its own OpenSSH sshd on 127.0.0.1 (tests/services/sshd.py) and compares:

1. One large file on loopback: pdrflow's SFTP backend (``put``: sha256 while streaming,
   fsync, atomic rename) vs OpenSSH's ``sftp -b`` (``put``; also ``sftp -f``, which fsyncs
   like pdrflow) vs paramiko's plain ``SFTPClient.put``; and pdrflow with its fsync patched
   out, to show what durability costs. Each sample includes connecting and authenticating,
   and starts after ``sync`` (no sample pays for another's dirty pages); MB/s = 10^6 B/s.
2. The same large file through the delay proxy (tests/services/tcp_proxy.py) at each
   round-trip time above 0: what latency does to each client's window and pipelining.
3. One KOSMA-tau model's file set (2 HDF5 files of a few MB + 83 text files of 10-50 KB)
   through the delay proxy at each round-trip time (0 included: the proxy's own cost):
   pdrflow ``put_many`` (several files in flight) vs ``sftp -b`` putting the files one by
   one (and pdrflow ``put`` one by one, to show where the gain comes from), and paramiko's own
   ``SFTPClient`` with 8 channels on one connection in flight against pdrflow without fsync
   (paramiko cannot fsync): whether pdrflow's own SFTP protocol earns its keep.
4. Downloads (``fetch``: pipelined reads, sha256 while streaming, a temporary local name renamed
   when complete): the large file at loopback and each round-trip time above 0, and the model's
   file set at each round-trip time, against paramiko's ``SFTPClient.getfo`` (its prefetching
   ``get``, hashing into the same kind of local temporary) on the same SSH connection pdrflow
   opens (same cipher and receive window: only the SFTP layer differs), one file at a time and
   8 files in flight on 8 channels; OpenSSH's ``sftp -b get`` for the large file as a reference.

``--parts uploads`` or ``--parts downloads`` runs one half only.

The samples run interleaved (a, b, c, a, b, c, ...) so that background load hits all
contenders alike; the medians and their ratios are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# The tests' services as the tests import them: a site package may ship a top-level `tests` of its own.
sys.path.insert(0, str(REPO / "tests"))

import paramiko
from services.sshd import Sshd
from services.tcp_proxy import TcpProxy

from pdrflow.config import SftpStorageConfig
from pdrflow.storage.base import HashingSink, sha256_file
from pdrflow.storage.sftp import SftpStorage
from pdrflow.storage.sftp_connect import MAX_PACKET_SIZE, WINDOW_SIZE, open_transport, resolve_endpoint
from pdrflow.storage.sftp_protocol import SftpSession


def storage_config(server: Sshd, port: int, known_hosts: Path, root: Path) -> SftpStorageConfig:
    return SftpStorageConfig(
        kind="sftp",
        host=server.host,
        port=port,
        username="root",
        root=str(root),
        key_filename=server.client_key,
        known_hosts=known_hosts,
        ssh_config=None,
        connect_timeout=30,
        operation_timeout=120,
        files_in_flight=8,
    )


def sftp_batch(server: Sshd, port: int, known_hosts: Path, batch: Path, *, fsync: bool = False) -> None:
    """OpenSSH's own client; ``fsync``: ``sftp -f`` (fsync@openssh.com after each file, like pdrflow)."""
    subprocess.run(
        [
            "sftp", *(["-f"] if fsync else []), "-q", "-b", str(batch), "-P", str(port),
            "-i", str(server.client_key), "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"root@{server.host}",
        ],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip


@contextlib.contextmanager
def without_fsync() -> Iterator[None]:
    """pdrflow with its fsync switched off - not a shipping mode: it shows what durability costs."""
    original = SftpSession.__init__

    def patched(self: SftpSession, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.use_fsync = False

    SftpSession.__init__ = patched  # type: ignore[method-assign]
    try:
        yield
    finally:
        SftpSession.__init__ = original  # type: ignore[method-assign]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def write_large_file(work: Path, size_mb: int) -> Path:
    source = work / "large.bin"
    with source.open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1_000_000))
    return source


@contextlib.contextmanager
def delayed(server: Sshd, known_hosts: Path, rtt_ms: float | None) -> Iterator[int]:
    """The port to connect to: the server's own (``rtt_ms`` None), else a delay proxy's in front of it."""
    if rtt_ms is None:
        server.write_known_hosts(known_hosts)
        yield server.port
        return
    with TcpProxy(server.port, delay=rtt_ms / 2000) as proxy:
        server.write_known_hosts(known_hosts, proxy.port)
        yield proxy.port


def large_file(server: Sshd, known_hosts: Path, work: Path, source: Path, repeat: int,
               rtt_ms: float | None = None) -> dict[str, object]:
    with delayed(server, known_hosts, rtt_ms) as port:
        return _large_file(server, port, known_hosts, work, source, repeat) | {"rtt_ms": rtt_ms}


def _large_file(server: Sshd, port: int, known_hosts: Path, work: Path, source: Path,
                repeat: int) -> dict[str, object]:
    size, sha = sha256_file(source)
    remote = work / "remote-large"

    def fresh() -> None:
        shutil.rmtree(remote, ignore_errors=True)
        remote.mkdir()

    def pdrflow() -> None:
        with contextlib.closing(SftpStorage(storage_config(server, port, known_hosts, remote))) as storage:
            storage.put(source, "grid/pdrgrid/large.bin", size=size, sha256=sha)

    def pdrflow_no_fsync() -> None:
        with without_fsync():
            pdrflow()

    def openssh(fsync: bool = False) -> None:
        batch = work / "large.batch"
        batch.write_text(f"put {source} {remote}/large.bin\n")
        sftp_batch(server, port, known_hosts, batch, fsync=fsync)

    def plain_paramiko() -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(server.host, port, "root", key_filename=str(server.client_key),
                       look_for_keys=False, allow_agent=False)  # fmt: skip
        try:
            client.open_sftp().put(str(source), f"{remote}/large.bin")
        finally:
            client.close()

    contenders: dict[str, Callable[[], object]] = {
        "pdrflow": pdrflow,
        "openssh_sftp": openssh,
        "openssh_sftp_fsync": lambda: openssh(fsync=True),
        "paramiko_put": plain_paramiko,
        "pdrflow_without_fsync": pdrflow_no_fsync,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, action in contenders.items():
            fresh()
            os.sync()  # no sample pays for the previous one's dirty pages
            seconds = timed(action)
            stored = next(p for p in remote.rglob("large.bin"))
            assert stored.stat().st_size == size, f"{name} stored {stored.stat().st_size} bytes"
            samples[name].append(size / seconds / 1e6)
    fresh()
    medians = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    return {
        "bytes": size,
        "mb_per_s": medians,
        "samples_mb_per_s": {name: [round(v, 1) for v in values] for name, values in samples.items()},
        "ratio_pdrflow_to_openssh_sftp": round(medians["pdrflow"] / medians["openssh_sftp"], 2),
        "ratio_pdrflow_to_openssh_sftp_fsync": round(medians["pdrflow"] / medians["openssh_sftp_fsync"], 2),
        "ratio_pdrflow_to_paramiko_put": round(medians["pdrflow"] / medians["paramiko_put"], 2),
        "ratio_pdrflow_without_fsync_to_openssh_sftp": round(
            medians["pdrflow_without_fsync"] / medians["openssh_sftp"], 2
        ),
    }


def model_files(directory: Path) -> list[tuple[Path, str, int, str]]:
    """A KOSMA-tau model's outputs: 2 HDF5 files and 83 text files, realistic sizes, seeded."""
    rng = random.Random(1)
    sizes = [("pdrstruct100_30_-10_10_00.hdf5", 3_200_000), ("pdrchem100_30_-10_10_00.hdf5", 1_400_000)]
    sizes += [(f"ONION100_30_-10_10_00.file{i:02d}.out", rng.randint(10_000, 50_000)) for i in range(83)]
    items = []
    directory.mkdir(parents=True)
    for name, size in sizes:
        path = directory / name
        path.write_bytes(rng.randbytes(size))
        items.append((path, f"grid/pdrgrid/{name}", *sha256_file(path)))
    return items


def one_model(server: Sshd, known_hosts: Path, work: Path, rtt_ms: float, repeat: int) -> dict[str, object]:
    shutil.rmtree(work / "model", ignore_errors=True)
    items = model_files(work / "model")
    remote = work / "remote-model"
    with delayed(server, known_hosts, rtt_ms) as port:

        def fresh() -> None:
            shutil.rmtree(remote, ignore_errors=True)
            remote.mkdir()

        def pdrflow_put_many() -> None:
            with contextlib.closing(SftpStorage(storage_config(server, port, known_hosts, remote))) as storage:
                storage.put_many(items)

        def pdrflow_one_by_one() -> None:
            with contextlib.closing(SftpStorage(storage_config(server, port, known_hosts, remote))) as storage:
                for local, path, size, sha in items:
                    storage.put(local, path, size=size, sha256=sha)

        def pdrflow_put_many_no_fsync() -> None:
            with without_fsync():
                pdrflow_put_many()

        def paramiko_in_flight() -> None:
            paramiko_channels_in_flight(server, port, known_hosts, remote, items, in_flight=8)

        def openssh_one_by_one() -> None:
            batch = work / "model.batch"
            lines = [f"-mkdir {remote}/grid", f"-mkdir {remote}/grid/pdrgrid"]
            lines += [f"put {local} {remote}/{path}" for local, path, _, _ in items]
            batch.write_text("\n".join(lines) + "\n")
            sftp_batch(server, port, known_hosts, batch)

        contenders = {
            "pdrflow_put_many": pdrflow_put_many,
            "openssh_sftp_batch": openssh_one_by_one,
            "pdrflow_put_one_by_one": pdrflow_one_by_one,
            "pdrflow_put_many_without_fsync": pdrflow_put_many_no_fsync,
            "paramiko_8_channels_in_flight": paramiko_in_flight,
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeat):
            for name, action in contenders.items():
                fresh()
                os.sync()
                samples[name].append(timed(action))
                stored = sorted(p.name for p in (remote / "grid" / "pdrgrid").iterdir())
                assert stored == sorted(Path(path).name for _, path, _, _ in items), f"{name}: wrong file set"
        fresh()
    medians = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    return {
        "files": len(items),
        "bytes": sum(size for _, _, size, _ in items),
        "rtt_ms": rtt_ms,
        "seconds": medians,
        "samples_seconds": {name: [round(v, 2) for v in values] for name, values in samples.items()},
        "ratio_pdrflow_put_many_to_openssh_sftp_batch": round(
            medians["pdrflow_put_many"] / medians["openssh_sftp_batch"], 3
        ),
        # like for like (paramiko has no fsync@openssh.com): > 1 means paramiko is slower
        "ratio_paramiko_in_flight_to_pdrflow_put_many_without_fsync": round(
            medians["paramiko_8_channels_in_flight"] / medians["pdrflow_put_many_without_fsync"], 3
        ),
    }


def paramiko_channels_in_flight(server: Sshd, port: int, known_hosts: Path, remote: Path,
                                items: list[tuple[Path, str, int, str]], in_flight: int) -> None:
    """paramiko's own SFTPClient doing what pdrflow's upload does, as well as paramiko can: one SSH
    connection, ``in_flight`` SFTP channels each uploading one file at a time with pipelined writes,
    sha256 while streaming, a hidden temporary name, then posix-rename. No fsync: paramiko has no
    fsync@openssh.com, so it is compared with pdrflow with fsync switched off."""
    import hashlib
    import queue
    from concurrent.futures import ThreadPoolExecutor

    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(server.host, port, "root", key_filename=str(server.client_key), look_for_keys=False,
                   allow_agent=False)
    try:
        transport = client.get_transport()
        assert transport is not None
        channels: queue.Queue[paramiko.SFTPClient] = queue.Queue()
        for _ in range(in_flight):
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            channels.put(sftp)
        first = channels.get()
        for directory in sorted({str(Path(path).parent) for _, path, _, _ in items}):
            parts = Path(directory).parts
            for depth in range(1, len(parts) + 1):
                with contextlib.suppress(OSError):
                    first.mkdir(f"{remote}/{'/'.join(parts[:depth])}")
        channels.put(first)

        def upload(item: tuple[Path, str, int, str]) -> None:
            local, path, size, sha = item
            sftp = channels.get()
            try:
                final = f"{remote}/{path}"
                temporary = f"{remote}/{Path(path).parent}/.{Path(path).name}.bench.part"
                digest = hashlib.sha256()
                with local.open("rb") as source, sftp.open(temporary, "wb") as target:
                    target.set_pipelined(True)
                    while chunk := source.read(32768):
                        digest.update(chunk)
                        target.write(chunk)
                assert digest.hexdigest() == sha and sftp.stat(temporary).st_size == size
                sftp.posix_rename(temporary, final)
            finally:
                channels.put(sftp)

        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(upload, items))
    finally:
        client.close()


# ---- downloads ---------------------------------------------------------------------------------


@contextlib.contextmanager
def paramiko_clients(config: SftpStorageConfig, channels: int) -> Iterator[list[paramiko.SFTPClient]]:
    """``channels`` paramiko SFTPClients on one SSH connection opened exactly as pdrflow opens its own
    (cipher preference, 16 MiB receive window, host key check): only the SFTP layer differs."""
    transport = open_transport(resolve_endpoint(config), None, config.connect_timeout, config.operation_timeout)
    try:
        clients = []
        for _ in range(channels):
            client = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW_SIZE,
                                                        max_packet_size=MAX_PACKET_SIZE)
            assert client is not None
            clients.append(client)
        yield clients
    finally:
        transport.close()


def paramiko_fetch(client: paramiko.SFTPClient, remote: str, local: Path,
                   in_flight: int | None = None) -> tuple[int, str]:
    """What pdrflow's fetch does, through paramiko: ``getfo`` (prefetching reads; ``in_flight``: at
    most that many outstanding, None: paramiko's default, every read of the file at once) into a
    hashing writer on a temporary local name, renamed when complete."""
    partial = local.parent / f".{local.name}.bench.part"
    with partial.open("xb") as stream:
        sink = HashingSink(stream)
        client.getfo(remote, sink, max_concurrent_prefetch_requests=in_flight)  # type: ignore[arg-type]
    os.replace(partial, local)
    return sink.size, sink.sha256


def download_large_file(server: Sshd, known_hosts: Path, work: Path, source: Path, repeat: int,
                        rtt_ms: float | None = None) -> dict[str, object]:
    size, sha = sha256_file(source)
    remote = work / "remote-download-large"
    shutil.rmtree(remote, ignore_errors=True)
    (remote / "grid" / "pdrgrid").mkdir(parents=True)
    shutil.copyfile(source, remote / "grid" / "pdrgrid" / "large.bin")
    local_dir = work / "downloaded"
    with delayed(server, known_hosts, rtt_ms) as port:
        config = storage_config(server, port, known_hosts, remote)

        def pdrflow() -> tuple[int, str]:
            with contextlib.closing(SftpStorage(config)) as storage:
                stored = storage.fetch("grid/pdrgrid/large.bin", local_dir / "large.bin")
            return stored.size, stored.sha256

        def paramiko_getfo(in_flight: int | None = None) -> tuple[int, str]:
            with paramiko_clients(config, 1) as [client]:
                return paramiko_fetch(client, f"{remote}/grid/pdrgrid/large.bin", local_dir / "large.bin", in_flight)

        def openssh() -> None:  # no sha256: OpenSSH does not hash (the copy is checked after the clock)
            batch = work / "download.batch"
            batch.write_text(f"get {remote}/grid/pdrgrid/large.bin {local_dir}/large.bin\n")
            sftp_batch(server, port, known_hosts, batch)

        contenders: dict[str, Callable[[], tuple[int, str] | None]] = {
            "pdrflow_fetch": pdrflow,
            "paramiko_getfo_sha256": paramiko_getfo,
            # paramiko's prefetch sends every read of the file at once by default; 64 is pdrflow's READS_IN_FLIGHT
            "paramiko_getfo_sha256_64_in_flight": lambda: paramiko_getfo(64),
            "openssh_sftp_get": openssh,
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeat):
            for name, action in contenders.items():
                shutil.rmtree(local_dir, ignore_errors=True)
                local_dir.mkdir()
                os.sync()
                started = time.perf_counter()
                got = action()
                seconds = time.perf_counter() - started
                assert got in (None, (size, sha)), f"{name} reported {got}"
                assert sha256_file(local_dir / "large.bin") == (size, sha), f"{name}: wrong bytes"
                samples[name].append(size / seconds / 1e6)
    shutil.rmtree(remote, ignore_errors=True)
    shutil.rmtree(local_dir, ignore_errors=True)
    medians = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    return {
        "bytes": size,
        "rtt_ms": rtt_ms,
        "mb_per_s": medians,
        "samples_mb_per_s": {name: [round(v, 1) for v in values] for name, values in samples.items()},
        # > 1 means pdrflow is faster
        "ratio_pdrflow_to_paramiko_getfo": round(medians["pdrflow_fetch"] / medians["paramiko_getfo_sha256"], 2),
        "ratio_pdrflow_to_paramiko_getfo_64_in_flight": round(
            medians["pdrflow_fetch"] / medians["paramiko_getfo_sha256_64_in_flight"], 2),
        "ratio_pdrflow_to_openssh_sftp_get": round(medians["pdrflow_fetch"] / medians["openssh_sftp_get"], 2),
    }


def download_one_model(server: Sshd, known_hosts: Path, work: Path, rtt_ms: float, repeat: int) -> dict[str, object]:
    from concurrent.futures import ThreadPoolExecutor

    shutil.rmtree(work / "model", ignore_errors=True)
    items = model_files(work / "model")
    remote = work / "remote-download-model"
    shutil.rmtree(remote, ignore_errors=True)
    (remote / "grid" / "pdrgrid").mkdir(parents=True)
    for local, path, _, _ in items:
        shutil.copyfile(local, remote / path)
    expected = {Path(path).name: (size, sha) for _, path, size, sha in items}
    local_dir = work / "downloaded"
    with delayed(server, known_hosts, rtt_ms) as port:
        config = storage_config(server, port, known_hosts, remote)

        def pdrflow(in_flight: int) -> dict[str, tuple[int, str]]:
            with contextlib.closing(SftpStorage(config)) as storage, ThreadPoolExecutor(in_flight) as pool:
                stored = pool.map(lambda item: storage.fetch(item[1], local_dir / Path(item[1]).name), items)
                return {Path(s.path).name: (s.size, s.sha256) for s in stored}

        def paramiko_channels(in_flight: int) -> dict[str, tuple[int, str]]:
            import queue

            with paramiko_clients(config, in_flight) as clients, ThreadPoolExecutor(in_flight) as pool:
                idle: queue.Queue[paramiko.SFTPClient] = queue.Queue()
                for client in clients:
                    idle.put(client)

                def fetch(item: tuple[Path, str, int, str]) -> tuple[str, tuple[int, str]]:
                    client = idle.get()
                    try:
                        name = Path(item[1]).name
                        return name, paramiko_fetch(client, f"{remote}/{item[1]}", local_dir / name)
                    finally:
                        idle.put(client)

                return dict(pool.map(fetch, items))

        contenders: dict[str, Callable[[], dict[str, tuple[int, str]]]] = {
            "pdrflow_fetch_8_in_flight": lambda: pdrflow(8),
            "paramiko_getfo_8_channels_in_flight": lambda: paramiko_channels(8),
            "pdrflow_fetch_one_by_one": lambda: pdrflow(1),
            "paramiko_getfo_one_by_one": lambda: paramiko_channels(1),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeat):
            for name, action in contenders.items():
                shutil.rmtree(local_dir, ignore_errors=True)
                local_dir.mkdir()
                os.sync()
                started = time.perf_counter()
                got = action()
                samples[name].append(time.perf_counter() - started)
                assert got == expected, f"{name}: wrong bytes"
    shutil.rmtree(remote, ignore_errors=True)
    shutil.rmtree(local_dir, ignore_errors=True)
    medians = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    return {
        "files": len(items),
        "bytes": sum(size for _, _, size, _ in items),
        "rtt_ms": rtt_ms,
        "seconds": medians,
        "samples_seconds": {name: [round(v, 2) for v in values] for name, values in samples.items()},
        # > 1 means paramiko is slower
        "ratio_paramiko_to_pdrflow_8_in_flight": round(
            medians["paramiko_getfo_8_channels_in_flight"] / medians["pdrflow_fetch_8_in_flight"], 3),
        "ratio_paramiko_to_pdrflow_one_by_one": round(
            medians["paramiko_getfo_one_by_one"] / medians["pdrflow_fetch_one_by_one"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200, help="size of the large file (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=5, help="samples per contender")
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 20.0],
                        help="round-trip times added by the delay proxy")
    parser.add_argument("--parts", choices=["uploads", "downloads"], nargs="+", default=["uploads", "downloads"],
                        help="which measurements to run")
    args = parser.parse_args()
    ssh_version = subprocess.run(["ssh", "-V"], check=False, capture_output=True, text=True, timeout=10).stderr.strip()
    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-sftp-"))
    try:
        with Sshd(workdir=work / "sshd") as server:
            known_hosts = server.write_known_hosts(work / "known_hosts")
            with contextlib.closing(SftpStorage(storage_config(server, server.port, known_hosts, work))) as probe:
                probe.stat("probe")
                cipher = probe.cipher
            source = write_large_file(work, args.size_mb)
            result: dict[str, object] = {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "paramiko": paramiko.__version__,
                    "openssh": ssh_version,
                    "pdrflow_cipher": cipher,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                },
            }
            if "uploads" in args.parts:
                result["large_file_loopback"] = large_file(server, known_hosts, work, source, args.repeat)
                result["large_file_over_delay_proxy"] = [
                    large_file(server, known_hosts, work, source, args.repeat, rtt) for rtt in args.rtt_ms if rtt > 0]
                result["one_model_over_delay_proxy"] = [
                    one_model(server, known_hosts, work, rtt, args.repeat) for rtt in args.rtt_ms]
            if "downloads" in args.parts:
                result["download_large_file"] = [
                    download_large_file(server, known_hosts, work, source, args.repeat, rtt if rtt > 0 else None)
                    for rtt in args.rtt_ms]
                result["download_one_model_over_delay_proxy"] = [
                    download_one_model(server, known_hosts, work, rtt, args.repeat) for rtt in args.rtt_ms]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
