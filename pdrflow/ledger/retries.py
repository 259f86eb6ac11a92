"""The ledger's one retry policy: a whole operation again, in a fresh transaction, on a transient error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential, wait_random

P = ParamSpec("P")
T = TypeVar("T")


def _transient(error: BaseException) -> bool:
    """Worth retrying: by error class (lock, dropped connection, deadlock), never by message text."""
    return isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated)


def _transient_db_errors(method: Callable[P, T]) -> Callable[P, T]:
    """Retry a whole ledger operation (a fresh transaction each time) for ``self.patience`` seconds."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        ledger = args[0]
        for attempt in Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(ledger.patience),  # type: ignore[attr-defined]
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            reraise=True,
        ):
            with attempt:
                return method(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper
