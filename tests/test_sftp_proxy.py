"""An archive behind a gateway: ssh_config's ProxyJump and ProxyCommand, through a second real sshd."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from services.sshd import Sshd

from pdrflow.config import SftpStorageConfig
from pdrflow.storage.base import StorageError, sha256_file
from pdrflow.storage.sftp import SftpStorage

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def gateway() -> Iterator[Sshd]:
    server = Sshd()
    server.start()
    yield server
    server.cleanup()


def _ssh_config(tmp_path: Path, gateway: Sshd, archive: Sshd, hop: str) -> Path:
    """``Host archive`` is reached only through ``Host gw``; the gateway's own login is OpenSSH's, from here."""
    known_gw = gateway.write_known_hosts(tmp_path / "known_gw")
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Host gw\n  HostName {gateway.host}\n  Port {gateway.port}\n  User root\n  IdentityFile {gateway.client_key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {known_gw}\n  StrictHostKeyChecking yes\n"
        f"Host archive\n  HostName {archive.host}\n  Port {archive.port}\n  User root\n  {hop}\n"
    )
    return path


def _storage(tmp_path: Path, archive: Sshd, ssh_config: Path) -> SftpStorageConfig:
    return SftpStorageConfig(
        kind="sftp", host="archive", port=None, username=None, root=str(tmp_path / "archive"),
        key_filename=archive.client_key, known_hosts=archive.write_known_hosts(tmp_path / "known_archive"),
        ssh_config=ssh_config, connect_timeout=10.0, operation_timeout=10.0, files_in_flight=4, password=None,
    )


@pytest.mark.parametrize("hop", ["ProxyJump gw", "ProxyCommand ssh -F {config} -o BatchMode=yes -W %h:%p gw"])
def test_an_archive_reached_through_a_gateway(tmp_path: Path, sshd: Sshd, gateway: Sshd, hop: str) -> None:
    config_path = tmp_path / "ssh_config"
    ssh_config = _ssh_config(tmp_path, gateway, sshd, hop.format(config=config_path))
    source = tmp_path / "model.hdf"
    source.write_bytes(os.urandom(100_000))
    size, digest = sha256_file(source)
    logins_before = gateway.log_file.read_text().count("Accepted publickey for root")
    with SftpStorage(_storage(tmp_path, sshd, ssh_config)) as storage:
        stored = storage.put(source, "grid/pdrgrid/model.hdf", size=size, sha256=digest)
        assert (stored.size, stored.sha256) == (size, digest)
        fetched = storage.fetch("grid/pdrgrid/model.hdf", tmp_path / "back.hdf")
        assert fetched.sha256 == digest
    assert (tmp_path / "archive" / "grid" / "pdrgrid" / "model.hdf").read_bytes() == source.read_bytes()
    # The gateway really carried it: OpenSSH's client logged in there once for this connection (the test
    # below shows the archive is not reached when the gateway is down).
    assert gateway.log_file.read_text().count("Accepted publickey for root") == logins_before + 1


def test_a_gateway_that_is_down_is_a_transient_storage_error(tmp_path: Path, sshd: Sshd) -> None:
    down = Sshd()
    down.start()
    ssh_config = _ssh_config(tmp_path, down, sshd, "ProxyJump gw")
    down.stop()
    try:
        with pytest.raises(StorageError) as refused, SftpStorage(_storage(tmp_path, sshd, ssh_config)) as storage:
            storage.stat("anything")
        assert refused.value.transient
    finally:
        down.cleanup()
