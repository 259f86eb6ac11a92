"""One SSH connection to the archive server, a pool of SFTP channels on it, and the retry policy.

The connection is opened lazily and reopened transparently after a drop; every connection
gets a new generation number so that channels of an older one are never reused. At most
``files_in_flight`` channels are busy at once (keep it at or below the server's
``MaxSessions``, 10 by default in OpenSSH). Thread-safe.

Network trouble on a channel (refused, reset, timeout, server restart) drops the connection
and is raised as a ``transient`` :class:`StorageError`; :meth:`SftpChannelPool.retrying`
retries those with bounded exponential backoff (tenacity), reconnecting each time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from .base import StorageError
from .sftp_connect import Endpoint, open_transport
from .sftp_errors import LINK_ERRORS
from .sftp_protocol import SftpSession, SftpStatus

if TYPE_CHECKING:
    from .sftp import SftpStorageConfig

log = logging.getLogger("pdrflow.storage.sftp")
T = TypeVar("T")

#: Bounded retry of transient failures inside one call (the driver resubmits after that).
RETRY_ATTEMPTS = 4
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0

# Raised by the network or the SSH layer (opening a channel too): the connection is suspect, retrying may help.
NETWORK_ERRORS = (*LINK_ERRORS, paramiko.SSHException)


class SftpChannelPool:
    """The connection, channels and retry policy of one :class:`~.sftp.SftpStorage`.

    Not picklable (it holds a lock and sockets): the storage pickles its configuration only.
    """

    def __init__(self, config: SftpStorageConfig, endpoint: Endpoint) -> None:
        self._config = config
        self._endpoint = endpoint
        self._lock = threading.Lock()  # guards the fields below and (re)connecting
        self._transport: paramiko.Transport | None = None
        self._generation = 0  # bumped per connection: stale sessions are never reused
        self._idle: list[tuple[int, SftpSession]] = []
        self._known_dirs: set[str] = set()
        self._slots = threading.BoundedSemaphore(config.files_in_flight)

    @property
    def transport(self) -> paramiko.Transport | None:
        """The SSH connection if one is open (to report e.g. the negotiated cipher)."""
        return self._transport

    # ---- connection --------------------------------------------------------------------

    def _connect(self) -> tuple[int, paramiko.Transport]:
        """The live transport (connecting if needed); call with the lock held."""
        if self._transport is None or not self._transport.is_active():
            if self._transport is not None:
                self._drop_locked()
            password = self._config.password.get_secret_value() if self._config.password else None
            self._transport = open_transport(
                self._endpoint, password, self._config.connect_timeout, self._config.operation_timeout
            )
            self._generation += 1
        return self._generation, self._transport

    def _drop_locked(self) -> None:
        for _, session in self._idle:
            session.close()
        self._idle.clear()
        self._known_dirs.clear()
        if self._transport is not None:
            with contextlib.suppress(Exception):  # it may be dead already
                self._transport.close()
        self._transport = None

    def _discard(self, generation: int) -> None:
        """Forget a connection that failed (unless another thread already replaced it)."""
        with self._lock:
            if generation == self._generation and self._transport is not None:
                log.info("dropping the connection to %s after a failure", self._endpoint.address)
                self._drop_locked()

    def close(self) -> None:
        """Close the connection; a later call reopens it."""
        with self._lock:
            self._drop_locked()
            self._generation += 1

    # ---- directories known to exist (forgotten with the connection) --------------------

    def knows_dir(self, directory: str) -> bool:
        return directory in self._known_dirs

    def remember_dir(self, directory: str) -> None:
        with self._lock:
            self._known_dirs.add(directory)

    # ---- channels ----------------------------------------------------------------------

    def _wait_for_slot(self) -> None:
        if not self._slots.acquire(timeout=self._config.operation_timeout * RETRY_ATTEMPTS):
            raise StorageError(f"no free SFTP channel to {self._endpoint.address} in time", transient=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[SftpSession]:
        """An SFTP channel for this thread; network errors become transient StorageErrors."""
        self._wait_for_slot()
        with self._checked_out() as session:
            yield session

    @contextlib.contextmanager
    def spare_session(self) -> Iterator[SftpSession | None]:
        """A second channel if one of the ``files_in_flight`` is free right now, else None (never waits)."""
        if not self._slots.acquire(blocking=False):
            yield None
            return
        with self._checked_out() as session:
            yield session

    @contextlib.contextmanager
    def _checked_out(self) -> Iterator[SftpSession]:
        """A channel from the pool (or a new one); the caller holds a slot, released here."""
        generation = -1
        session: SftpSession | None = None
        try:
            with self._lock:
                generation, transport = self._connect()
                while self._idle and session is None:
                    idle_generation, candidate = self._idle.pop()
                    if idle_generation == generation and not candidate.closed:
                        session = candidate
                    else:
                        candidate.close()
            if session is None:
                session = SftpSession(transport, self._config.operation_timeout)
            yield session
        except NETWORK_ERRORS as exc:
            if session is not None:
                session.close()
                session = None
            if generation >= 0:
                self._discard(generation)
            raise self._network_error(exc) from None
        except (SftpStatus, StorageError):
            raise  # the server answered: the channel is in a clean state and can be reused
        except BaseException:
            # Anything else may have left unread responses on the channel.
            if session is not None:
                session.close()
                session = None
            raise
        finally:
            if session is not None:
                with self._lock:
                    if generation == self._generation and not session.closed:
                        self._idle.append((generation, session))
                    else:
                        session.close()
            self._slots.release()

    def _network_error(self, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, TimeoutError):
            what = f"no answer within {self._config.operation_timeout:g} s"
        elif isinstance(exc, ConnectionError | EOFError):
            what = "connection lost"
        else:
            what = str(exc) or type(exc).__name__
        return StorageError(f"SFTP connection to {self._endpoint.address} failed: {what}", transient=True)

    # ---- retry policy ------------------------------------------------------------------

    def retrying(self, operation: Callable[[], T], what: str) -> T:
        """Run ``operation``, retrying its transient StorageErrors (reconnecting is up to it)."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s: %s; retrying (attempt %d of %d)", what, exc, state.attempt_number + 1, RETRY_ATTEMPTS)

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, StorageError) and exc.transient),
            stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(self._config.operation_timeout),
            wait=wait_exponential_jitter(multiplier=RETRY_INITIAL, max=RETRY_MAX, jitter=RETRY_INITIAL / 2),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(operation)
