"""The pdrflow page of the Dask dashboard, served by the scheduler itself.

A ``SchedulerPlugin`` (registered from the driver with ``client.register_plugin``) is pickled to
the scheduler wherever it runs — in the driver process (LocalCluster, SLURMCluster) or on rank 0
of an allocation (SLURMRunner). Its pages are routes of distributed's own
(``distributed.scheduler.http.routes``, set by ``cluster/base.py`` for every pdrflow scheduler:
``routes.py``), below the dashboard's prefix:

- ``<dashboard>/pdrflow``: the page (grid map and counts by state);
- ``<dashboard>/pdrflow/data.json``: what the page polls, from the ledger (not from Dask's task
  state: the ledger is the truth).

The plugin opens its own read-only ledger connection, runs the queries on one thread of its own
(never on the scheduler's event loop) and shares one result between all open pages for a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from ..config import DatabaseConfig
from .eta import estimate
from .page import render_page
from .queries import read_only_engine, snapshot

if TYPE_CHECKING:
    from distributed import Client, Scheduler
    from sqlalchemy import Engine

log = logging.getLogger("pdrflow.dashboard")

PLUGIN_NAME = "pdrflow-dashboard"
PAGE = "pdrflow"  # the page's path below the dashboard's prefix
ROUTES_MODULE = "pdrflow.dashboard.routes"
CACHE_SECONDS = 1.0  # pages polling at once share one snapshot for at least this long
COST_FACTOR = 4.0  # ...and for 4× the time the last snapshot took: the ledger is queried ≤ 20% of the time
MAX_CACHE_SECONDS = 30.0
MAX_PAGE = 100_000


def page_link(dashboard_link: str | None) -> str | None:
    """``http://host:8787/status`` (a client's or cluster's ``dashboard_link``) → ``http://host:8787/pdrflow``."""
    if not dashboard_link:
        return None
    base = dashboard_link.rsplit("/status", 1)[0] if dashboard_link.endswith("/status") else dashboard_link
    return f"{base.rstrip('/')}/{PAGE}"


def client_page_link(client: Client) -> str | None:
    """The pdrflow page of the cluster ``client`` is connected to (None when it has no dashboard)."""
    return page_link(client.dashboard_link)


def register_dashboard(client: Client, database: DatabaseConfig, grid: str, *, refresh_seconds: float = 2.0) -> bool:
    """Add the grid's page to the dashboard of the scheduler ``client`` talks to. A failure is logged,
    never raised: a missing page must not stop a grid. Returns whether the page was added."""
    try:
        client.register_plugin(DashboardPlugin(database, grid, refresh_seconds=refresh_seconds))
    except Exception as exc:  # noqa: BLE001 - whatever the scheduler reports back
        # The plugin's own errors never carry the password; scrub anyway, the text crossed the wire.
        text = DashboardPlugin(database, grid)._scrub(str(exc).splitlines()[0] if str(exc) else "")
        log.warning("pdrflow dashboard: page not added: %s: %s", type(exc).__name__, text[:300])
        return False
    return True


@dataclass
class _Cached:
    at: float
    data: dict[str, Any]


class DashboardPlugin(SchedulerPlugin):
    """``client.register_plugin(DashboardPlugin(config.database, config.grid.name))`` and the
    scheduler's dashboard gets a live ``/pdrflow`` page of the grid."""

    name = PLUGIN_NAME
    idempotent = False  # a new driver's plugin replaces the one a previous driver left

    def __init__(self, database: DatabaseConfig, grid: str, *, refresh_seconds: float = 2.0) -> None:
        if not refresh_seconds > 0:
            raise ValueError("refresh_seconds must be positive")
        self.database = database
        self.grid = grid
        self.refresh_seconds = float(refresh_seconds)
        self._runtime_init()

    def _runtime_init(self) -> None:
        # Scheduler-side state: never pickled, created in start().
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None
        self._cache: dict[int, _Cached] = {}
        self._cost = 0.0  # seconds the last snapshot took
        self._last_error: str | None = None

    # ---- pickling: only the configuration crosses to the scheduler -----------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"database": self.database, "grid": self.grid, "refresh_seconds": self.refresh_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.database = state["database"]
        self.grid = state["grid"]
        self.refresh_seconds = state["refresh_seconds"]
        self._runtime_init()

    def __repr__(self) -> str:
        return f"DashboardPlugin(grid={self.grid!r}, ledger={self.ledger_description()!r})"

    # ---- SchedulerPlugin ------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        previous = scheduler.plugins.get(self.name)
        if isinstance(previous, DashboardPlugin) and previous is not self:
            previous._dispose()  # replaced: the scheduler does not close an overwritten plugin
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrflow-dashboard")
        self._lock = asyncio.Lock()
        if ROUTES_MODULE not in dask.config.get("distributed.scheduler.http.routes", []):
            log.info("pdrflow dashboard: this scheduler was started without %s in distributed.scheduler.http.routes"
                     " (pdrflow's clusters add it): no page", ROUTES_MODULE)
            return
        _add_to_navigation(scheduler)
        log.info("pdrflow dashboard: grid %r at <dashboard>/%s", self.grid, PAGE)

    async def close(self) -> None:
        self._dispose()

    def _dispose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._cache.clear()

    # ---- data -----------------------------------------------------------------------------

    def ledger_description(self) -> str:
        """The ledger's URL with any password masked: what the page may show."""
        try:
            return self.database.sqlalchemy_url().render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL: show nothing of it
            return "(ledger)"

    def _scrub(self, text: str) -> str:
        """Remove the password (plain and URL-encoded) from text bound for the page or the log."""
        secret = self.database.password.get_secret_value() if self.database.password is not None else ""
        if secret:
            for form in {secret, urllib.parse.quote_plus(secret), urllib.parse.quote(secret, safe="")}:
                text = text.replace(form, "***")
        return text

    def _query(self, page: int) -> dict[str, Any]:
        # Runs on the plugin's own thread: the scheduler's event loop never waits on the database.
        if self._engine is None:
            self._engine = read_only_engine(self.database)
        return snapshot(self._engine, self.grid, page)

    def _error(self, exc: BaseException) -> dict[str, Any]:
        # First line only: SQLAlchemy appends the SQL and a link; the message loses any password.
        detail = self._scrub(str(exc).splitlines()[0] if str(exc) else "")[:300]
        message = f"cannot read the ledger: {type(exc).__name__}: {detail}"
        if "no such table" in detail:
            message = "the ledger has no pdrflow tables yet (no driver has used it)"
        elif "unable to open database file" in detail:
            message = "the ledger file does not exist (yet)"
        if message != self._last_error:  # log a lasting outage once, not every refresh
            log.warning("pdrflow dashboard: %s", message)
            self._last_error = message
        return {"grid": self.grid, "found": False, "error": message,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}

    async def data(self, page: int) -> dict[str, Any]:
        if self._executor is None or self._lock is None:
            return {"grid": self.grid, "found": False, "error": "the pdrflow dashboard is not running"}
        async with self._lock:  # many open pages: one query at a time, answers shared
            cached = self._cache.get(page)
            fresh_for = min(MAX_CACHE_SECONDS, max(CACHE_SECONDS, COST_FACTOR * self._cost))
            if cached is not None and time.monotonic() - cached.at < fresh_for:
                return cached.data
            started = time.monotonic()
            try:
                data = await asyncio.get_running_loop().run_in_executor(self._executor, self._query, page)
                self._last_error = None
            except Exception as exc:  # noqa: BLE001 - any database failure is shown, never raised
                data = self._error(exc)
            self._cost = time.monotonic() - started
            data["refresh_seconds"] = self.refresh_seconds
            self._cache = {page: _Cached(time.monotonic(), data)}  # keep one: pages are few
            return data


# ---- tornado handlers --------------------------------------------------------------------


def _current_plugin(scheduler: Scheduler) -> DashboardPlugin | None:
    # Looked up per request: a re-registered plugin takes over the routes added by the first one.
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, DashboardPlugin) else None


class PageHandler(web.RequestHandler):
    def initialize(self, dask_server: Scheduler) -> None:  # distributed's routes pass the scheduler so
        self.scheduler = dask_server

    def get(self) -> None:
        plugin = _current_plugin(self.scheduler)
        if plugin is None:
            self.set_status(404)
            self.finish("no pdrflow grid is registered with this scheduler")
            return
        self.set_header("Cache-Control", "no-store")
        self.finish(render_page(plugin.grid, plugin.ledger_description(), f"{PAGE}/data.json",
                                plugin.refresh_seconds, _navigation(self.scheduler)))


class DataHandler(web.RequestHandler):
    def initialize(self, dask_server: Scheduler) -> None:
        self.scheduler = dask_server

    async def get(self) -> None:
        plugin = _current_plugin(self.scheduler)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if plugin is None:
            self.set_status(404)
            self.finish(json.dumps({"found": False, "error": "no pdrflow grid is registered with this scheduler"}))
            return
        try:
            page = min(max(int(self.get_argument("page", "0")), 0), MAX_PAGE)
        except ValueError:
            page = 0
        data = dict(await plugin.data(page))
        if data.get("found"):
            # The ETA needs the worker slots, which only the scheduler knows: added per request, not cached.
            slots = sum(worker.nthreads for worker in self.scheduler.workers.values())
            eta = estimate(int(data.get("remaining", 0)), data.get("model_cost"), slots)
            data["eta"] = {"seconds": eta.seconds, "text": eta.eta_text(), "rate": eta.rate,
                           "rate_text": eta.rate_text(), "slots": slots}
        self.finish(json.dumps(data))


# ---- the dashboard's navigation bar ------------------------------------------------------


def _template_variables(scheduler: Scheduler) -> dict[str, Any] | None:
    """The dashboard's navigation data (distributed.dashboard.scheduler, memoized per scheduler).
    Internal to distributed: absent (no bokeh) or changed, the page simply is not linked."""
    try:
        from distributed.dashboard.scheduler import template_variables
    except ImportError:
        return None
    try:
        variables = template_variables(scheduler)
    except Exception:  # noqa: BLE001 - an internal of distributed
        return None
    return variables if isinstance(variables, dict) and isinstance(variables.get("pages"), list) else None


def _add_to_navigation(scheduler: Scheduler) -> None:
    # The Bokeh pages render their top bar from this shared list on every load, so adding the
    # page here links it from every dashboard page.
    variables = _template_variables(scheduler)
    if variables is not None and PAGE not in variables["pages"]:
        variables["pages"].append(PAGE)


def _navigation(scheduler: Scheduler) -> list[str]:
    variables = _template_variables(scheduler)
    pages = [str(p) for p in variables["pages"]] if variables is not None else ["info"]
    return pages if PAGE in pages else [*pages, PAGE]
