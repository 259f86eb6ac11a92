"""The pdrflow dashboard page: a real scheduler (in-process and in its own process), a real SQLite
ledger moved through its states, and the page loaded in headless Chromium."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import pytest
from distributed import Client, LocalCluster
from helpers import base_config, write_config
from services.marks import require_marked

from pdrflow.cluster.base import scheduler_settings
from pdrflow.config import DatabaseConfig, load_config
from pdrflow.dashboard import DashboardPlugin, page_link, register_dashboard
from pdrflow.dashboard.queries import read_only_engine, snapshot
from pdrflow.grid import Identity, expand_grid
from pdrflow.ledger import JobRef, Ledger
from pdrflow.storage import StoredFile

IDENTITY = Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)
GRID = "dashgrid"
CANARY = "canary-Pw-7f3q!x@y"  # what must never reach the page, the JSON or the log
CANARY_FORMS = (CANARY, urllib.parse.quote(CANARY, safe=""), urllib.parse.quote_plus(CANARY))  # also URL-encoded
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# 2 metallicities × 3 densities × 1 mass × 3 FUV fields: 2 facets of 3×3 cells, 18 jobs
AXES = {"metallicity": [0.5, 1.0], "density": [1.0e3, 1.0e4, 1.0e5], "mass": [0.1], "fuv": [10.0, 100.0, 1000.0]}


# ---- fixtures -----------------------------------------------------------------------------


@dataclass
class LedgerGrid:
    ledger: Ledger
    database: DatabaseConfig
    path: Path


@pytest.fixture
def ledger_grid(tmp_path: Path, null_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LedgerGrid]:
    monkeypatch.setenv("PDRFLOW_DB_PASSWORD", CANARY)  # the real config path: the secret comes from the env
    raw = base_config(tmp_path, home=null_home, grid=GRID)
    raw["grid"].update(AXES)
    config = load_config(write_config(tmp_path / "c.yaml", raw))
    assert config.database.password is not None and config.database.password.get_secret_value() == CANARY
    ledger = Ledger(config.database.sqlalchemy_url())
    ledger.register_grid(GRID, expand_grid(config, IDENTITY))
    yield LedgerGrid(ledger, config.database, tmp_path / "ledger.sqlite")
    ledger.close()


@dataclass
class Dashboard:
    client: Client
    base: str  # the dashboard's root URL, with its prefix and a trailing slash


@pytest.fixture
def local_dashboard() -> Iterator[Dashboard]:
    """The scheduler in this process (as with LocalCluster and SLURMCluster)."""
    with dask.config.set(scheduler_settings()), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield Dashboard(client, f"http://127.0.0.1:{cluster.scheduler.http_server.port}/")


@pytest.fixture
def remote_dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """The scheduler in a process of its own, as on rank 0 of a SLURMRunner allocation, with a
    dashboard prefix: the plugin must be pickled there and find the prefix itself."""
    scheduler_file = tmp_path / "scheduler.json"
    # the scheduler process has no secret of its own; it gets pdrflow's scheduler settings as rank 0 does
    routes = scheduler_settings()["distributed.scheduler.http.routes"]
    env = {**os.environ, "PDRFLOW_DB_PASSWORD": "", "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": repr(routes)}
    process = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--dashboard-prefix", "/dask", "--scheduler-file", str(scheduler_file),
         "--no-show"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        info = json.loads(scheduler_file.read_text())
        with Client(scheduler_file=str(scheduler_file)) as client:
            yield Dashboard(client, f"http://127.0.0.1:{info['services']['dashboard']}/dask/")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard tests need {', '.join(missing)} in CI")
        pytest.skip(f"no {', '.join(missing)}")
    require_marked("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    # An explicit chromedriver: selenium-manager must never try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# ---- helpers ------------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def archive(ledger: Ledger, job: JobRef) -> None:
    """The job's real path through the ledger: run, compute, archive with its file records."""
    attempt = ledger.start_model(job.id, "host", None).attempt_id
    ledger.finish_model(job.id, attempt, error=None, staged_dir="/scratch/x", host="host", provenance={})
    ledger.commit_archive(job.id, ledger.start_archive(job.id, "host", None).attempt_id,
                          [StoredFile(f"{GRID}/{job.name}/pdrout.hdf", 1, "0" * 64)])


def cell_states(driver: Any) -> dict[str, str]:
    """(facet, density, FUV) → data-state of every cell on the page."""
    return driver.execute_script(
        "const out = {};"
        "document.querySelectorAll('.facet').forEach(f => f.querySelectorAll('.cell').forEach(c => {"
        "  out[f.dataset.metallicity + '/' + c.dataset.density + '/' + c.dataset.fuv] = c.dataset.state; }));"
        "return out;"
    )


def count_of(driver: Any, state: str) -> int:
    return int(driver.execute_script(f"const e = document.getElementById('count-{state}');"
                                      "return e ? e.dataset.count : -1;"))


# ---- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "remote"])
def test_page_shows_the_grid_and_follows_the_ledger(
    where: str, ledger_grid: LedgerGrid, browser: Any, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    dashboard: Dashboard = request.getfixturevalue(f"{where}_dashboard")
    if where == "local":
        dashboard.client.register_plugin(DashboardPlugin(ledger_grid.database, GRID, refresh_seconds=0.5))
    else:  # the driver's way: never raises
        assert register_dashboard(dashboard.client, ledger_grid.database, GRID, refresh_seconds=0.5)
    url = dashboard.base + "pdrflow"
    browser.get(url)
    wait_for(lambda: len(cell_states(browser)) == 18, 20, "the grid's 18 cells")
    before = cell_states(browser)
    assert set(before.values()) == {"pending"}
    assert count_of(browser, "pending") == 18 and count_of(browser, "archived") == 0
    assert len(browser.find_elements("css selector", ".facet")) == 2  # one per metallicity
    assert "pdrflow grid dashgrid" in browser.find_element("css selector", "h1").text
    first = tmp_path / "before.png"
    browser.save_screenshot(str(first))
    counts_text = " ".join(browser.find_element("id", "counts").text.split())
    assert "pending 18" in counts_text and "total 18" in counts_text
    page_loads = browser.execute_script("return performance.getEntriesByType('navigation').length")

    jobs = ledger_grid.ledger.jobs(GRID)
    for job in jobs[:5]:
        archive(ledger_grid.ledger, job)
    attempt = ledger_grid.ledger.start_model(jobs[5].id, "host", None).attempt_id
    ledger_grid.ledger.finish_model(jobs[5].id, attempt, error="pdrexe exited with 7", staged_dir=None, host="host",
                                    provenance={})
    ledger_grid.ledger.start_model(jobs[6].id, "host", None)

    # A poll can land between two of the writes above, so wait for the page to show the last one, not the first.
    expected = sorted(["archived"] * 5 + ["failed_model", "running"] + ["pending"] * 11)
    wait_for(lambda: (count_of(browser, "archived"), count_of(browser, "pending"), count_of(browser, "failed_model"),
                      count_of(browser, "running")) == (5, 11, 1, 1), 10, "the counts to show all the new states")
    after = wait_for(lambda: (s := cell_states(browser)) and sorted(s.values()) == expected and s,
                     10, "the map to show all the new states")
    assert after != before and set(after) == set(before)  # same cells, new states
    # The update came from polling, not from reloading the page.
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == page_loads
    second = tmp_path / "after.png"
    browser.save_screenshot(str(second))
    assert first.stat().st_size > 5000 and second.read_bytes() != first.read_bytes()
    shutil.copy(second, Path(os.environ.get("PDRFLOW_SCREENSHOT_DIR", tmp_path)) / f"dashboard-{where}.png")

    # Linked from the dashboard's own navigation (the Bokeh pages' top bar).
    status, html = fetch(dashboard.base + "status")
    assert status == 200 and 'href="pdrflow"' in html
    assert not any(form in browser.page_source for form in CANARY_FORMS)


def test_unknown_grid_says_so(ledger_grid: LedgerGrid, local_dashboard: Dashboard, browser: Any) -> None:
    local_dashboard.client.register_plugin(DashboardPlugin(ledger_grid.database, "no-such-grid"))
    status, body = fetch(local_dashboard.base + "pdrflow/data.json")
    data = json.loads(body)
    assert status == 200 and data["found"] is False and data["total"] == 0 and "error" not in data
    browser.get(local_dashboard.base + "pdrflow")
    message = wait_for(lambda: browser.find_element("id", "message").text, 15, "the page's message")
    assert 'no grid named "no-such-grid"' in message
    assert browser.find_elements("css selector", ".cell") == []


def test_missing_ledger_is_reported_and_not_created(tmp_path: Path, local_dashboard: Dashboard) -> None:
    missing = tmp_path / "nowhere.sqlite"
    local_dashboard.client.register_plugin(DashboardPlugin(DatabaseConfig(url=f"sqlite:///{missing}"), GRID))
    status, body = fetch(local_dashboard.base + "pdrflow/data.json")
    assert status == 200 and json.loads(body)["error"] == "the ledger file does not exist (yet)"
    assert not missing.exists()  # read-only: the dashboard never creates a ledger


def test_the_password_never_reaches_page_json_or_log(
    ledger_grid: LedgerGrid, local_dashboard: Dashboard, caplog: pytest.LogCaptureFixture,
) -> None:
    # A server ledger that refuses connections: the error path, where secrets tend to leak.
    server = DatabaseConfig(url="postgresql+psycopg://pdr@127.0.0.1:1/ledger", password=ledger_grid.database.password)
    assert server.sqlalchemy_url().password == CANARY
    for database in (ledger_grid.database, server):
        plugin = DashboardPlugin(database, GRID)
        assert not any(form in repr(plugin) for form in CANARY_FORMS)
        with caplog.at_level(logging.INFO, logger="pdrflow.dashboard"):
            if database is server:  # a second plugin replaces the first (distributed warns)
                with pytest.warns(UserWarning, match="overwriting"):
                    local_dashboard.client.register_plugin(plugin)
            else:
                local_dashboard.client.register_plugin(plugin)
            _, html = fetch(local_dashboard.base + "pdrflow")
            _, body = fetch(local_dashboard.base + "pdrflow/data.json")
        assert "pdrflow grid" in html
        for text in (html, body, caplog.text):
            assert not any(form in text for form in CANARY_FORMS)
    assert "pdr:***@127.0.0.1:1" in html  # the server ledger is shown, masked
    error = json.loads(body)["error"]
    assert error.startswith("cannot read the ledger: OperationalError") and "127.0.0.1" in error
    assert "cannot read the ledger" in caplog.text


def test_snapshot_of_a_100k_job_grid_is_fast_and_bounded(tmp_path: Path) -> None:
    db = tmp_path / "big.sqlite"
    Ledger(f"sqlite:///{db}").close()  # the real schema
    axes = ([0.25, 0.5, 1.0, 2.0, 4.0], [0.01, 0.1, 1.0, 10.0], [10 ** (2 + i / 10) for i in range(70)],
            [10 ** (i / 10) for i in range(72)])
    rows = [(z, n, m, f) for z in axes[0] for m in axes[1] for n in axes[2] for f in axes[3]]
    assert len(rows) == 100_800
    states = ("archived", "pending", "running", "computed", "failed_model", "failed_storage")
    with sqlite3.connect(db) as connection:  # bulk rows straight into the ledger's tables (no models run)
        connection.execute("INSERT INTO grids (id, name, created_at) VALUES (1, 'big', '2026-01-01')")
        connection.executemany("INSERT INTO models (id, model_hash, created_at) VALUES (?, ?, '2026-01-01')",
                               [(i, f"{i:064x}") for i in range(len(rows))])
        connection.executemany(
            "INSERT INTO jobs (grid_id, model_id, name, metallicity, density, mass, fuv, state, created_at, "
            "updated_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, '2026-01-01', '2026-01-01')",
            [(i, f"j{i}", z, n, m, f, states[i % 7 % 6]) for i, (z, n, m, f) in enumerate(rows)])
    engine = read_only_engine(DatabaseConfig(url=f"sqlite:///{db}"))
    try:
        snapshot(engine, "big")  # warm the page cache, as a running dashboard has
        started = time.perf_counter()
        data = snapshot(engine, "big", page=1)
        elapsed = time.perf_counter() - started
        binned = snapshot(engine, "big", max_cells=1000)
    finally:
        engine.dispose()
    # ~0.3 s on an idle laptop core; generous for loaded CI machines (the plugin also backs off).
    assert elapsed < 5.0, f"snapshot took {elapsed:.2f} s"
    assert data["total"] == 100_800 and sum(data["counts"].values()) == 100_800
    assert data["facet_total"] == 20 and data["page"] == 1
    assert len(data["facets"]) == 3 and data["pages"] == 7  # 20 000 cells a page: 3 facets of 70×72
    assert len(json.dumps(data)) < 3_000_000
    cells = [sum(n for _, n in facet["cells"]) for facet in data["facets"]]
    assert cells == [70 * 72] * 3
    # Too many cells for one page: neighbouring axis values share a cell.
    assert binned["binned"] is True and len(binned["density"]) * len(binned["fuv"]) <= 1000
    assert sum(n for _, n in binned["facets"][0]["cells"]) == len(binned["density"]) * len(binned["fuv"])
    assert binned["density"][0].count("–") == 1  # a bin's label spans its first and last value


def test_page_link() -> None:
    assert page_link("http://node7:8787/status") == "http://node7:8787/pdrflow"
    assert page_link("http://node7:8787/dask/status") == "http://node7:8787/dask/pdrflow"
    assert page_link(None) is None


def test_register_dashboard_reports_failure_without_raising(
    ledger_grid: LedgerGrid, local_dashboard: Dashboard, caplog: pytest.LogCaptureFixture,
) -> None:
    local_dashboard.client.close()  # a scheduler the driver can no longer reach
    with caplog.at_level(logging.WARNING, logger="pdrflow.dashboard"):
        assert register_dashboard(local_dashboard.client, ledger_grid.database, GRID) is False
    assert "page not added" in caplog.text
    assert not any(form in caplog.text for form in CANARY_FORMS)


def test_page_shows_an_eta_from_attempt_durations_and_worker_slots(
    ledger_grid: LedgerGrid, local_dashboard: Dashboard, browser: Any,
) -> None:
    jobs = ledger_grid.ledger.jobs(GRID)
    for job in jobs[:2]:
        archive(ledger_grid.ledger, job)
    # as if each run took 10 s and each archival 2 s
    with sqlite3.connect(ledger_grid.path) as db:
        db.execute("update attempts set started_at = datetime(ended_at, '-10 seconds'), ended_at = datetime(ended_at) where kind = 'model'")
        db.execute("update attempts set started_at = datetime(ended_at, '-2 seconds'), ended_at = datetime(ended_at) where kind = 'archive'")
    local_dashboard.client.register_plugin(DashboardPlugin(ledger_grid.database, GRID, refresh_seconds=0.5))
    status, body = fetch(local_dashboard.base + "pdrflow/data.json")
    assert status == 200, body
    eta = json.loads(body)["eta"]
    # 16 models left × 12 s ÷ 1 slot (one worker of one thread), not the seconds since the start
    assert eta["slots"] == 1
    assert eta["seconds"] == pytest.approx(16 * 12)
    assert eta["text"] == "0:03:12"
    assert eta["rate_text"] == "0.08 models/s"
    browser.get(local_dashboard.base + "pdrflow")
    shown = wait_for(lambda: browser.find_element("id", "eta").text, 20, "the ETA on the page")
    assert re.fullmatch(r"ETA 0:03:12 · 0\.08 models/s · 1 worker slots", shown), shown
