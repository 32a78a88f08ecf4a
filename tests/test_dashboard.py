"""The MLflow dashboard in a real browser: `sparsesweep ui` serves a finished tiny sweep, and
headless Chromium (Debian's, driven by Playwright) finds its cell runs, a cell's trial runs
with their tags, and a trial's per-epoch `val_acc1` chart.

The store is written by the sweep's own tracking callback (`MlflowSweepCallback`), fed the
trial configs the sweep's searcher hands out, as Tune would feed it. Screenshots are saved
under `test-artifacts/dashboard/` at the repository root (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow_store import empty_store
from recorded_sweep import record_sweep
from sweep_helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUDGET = 2
SPEC = {
    "name": "dashboard",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [BUDGET],
        "seeds": [0, 1],
    },
    "search": {"lr": {"grid": [0.1]}},
}
CELL = "rigl+sparseopt s=0.9 e=2"
OTHER_CELL = "rigl s=0.9 e=2"
UI_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class Store:
    """Two finished sweeps in one MLflow store: where it is, and what each logged."""

    root: Path
    tracking_uri: str
    experiment_id: str  # the `dashboard` sweep
    val_acc1: dict[str, list[float]]  # its trial run name -> val_acc1 at epochs 1..BUDGET
    curves_experiment_id: str  # the `curves` sweep (CURVE_SPEC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The two sweeps, logged by the sweep's own tracking callback; the `dashboard` sweep has 4
    FINISHED trial runs."""
    from mlflow.tracking import MlflowClient

    from sweeps.spec.load import parse_spec

    root = tmp_path_factory.mktemp("dashboard")
    tracking_uri = empty_store(root / "mlflow.db")
    location = {"storage_path": str(root / "results"), "tracking_uri": tracking_uri}
    recorded = record_sweep(
        parse_spec({**SPEC, **location}), lambda number, epoch: 40.0 + 10.0 * epoch + number
    )
    curves = record_sweep(parse_spec({**CURVE_SPEC, **location}), results=curve_results)
    runs = MlflowClient(tracking_uri).search_runs(
        [recorded.experiment_id], "tags.`sparsesweep.role` = 'trial'"
    )
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 4
    return Store(
        root, tracking_uri, recorded.experiment_id, recorded.val_acc1, curves.experiment_id
    )


@pytest.fixture(scope="module")
def ui_url(store: Store) -> Iterator[str]:
    """`sparsesweep ui` serving the store, for every test of the module."""
    with dashboard(store.tracking_uri, store.root) as url:
        yield url


@pytest.fixture(scope="module")
def browser(store: Store) -> Iterator[Any]:
    """Headless Chromium (Debian's, driven by Playwright), its config and cache folders under
    the store's folder; each test opens its own page."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium) first")
    browser_env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(store.root / "xdg-config"),
        "XDG_CACHE_HOME": str(store.root / "xdg-cache"),
    }
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, env=browser_env
        )
        try:
            yield launched
        finally:
            launched.close()


ALLOWED_HOST = "mlflow.example.org"


def host_header_status(url: str, host: str) -> int:
    """The HTTP status the server answers to its runs-search API under a given Host header."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`sparsesweep ui` exited with {process.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"`sparsesweep ui` did not answer /health in {timeout_s} s:\n{log.read_text()}")


@contextlib.contextmanager
def dashboard(tracking_uri: str, workdir: Path) -> Iterator[str]:
    """`sparsesweep ui` on a free loopback port, in its own process group; yields its URL."""
    port = free_port()
    log = workdir / "ui.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeps",
                "ui",
                "--tracking-uri",
                tracking_uri,
                "--port",
                str(port),
                "--allowed-hosts",
                ALLOWED_HOST,
            ],
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log, timeout_s=180)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextlib.contextmanager
def browser_page(browser: Any, height: int) -> Iterator[Any]:
    """A new page (its own browser context: no cookies or storage of another test's page) with
    the UI's generous timeouts."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1600, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        yield page
    finally:
        context.close()


def test_dashboard_shows_the_sweep_runs_tags_and_epoch_metrics(
    store: Store, ui_url: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    children = sorted(name for name in store.val_acc1 if name.startswith(f"{CELL} "))
    others = sorted(name for name in store.val_acc1 if name.startswith(f"{OTHER_CELL} "))
    assert len(children) == len(others) == 2
    with browser_page(browser, height=1000) as page:
        page.goto(f"{ui_url}/#/experiments/{store.experiment_id}/runs")
        expect(page.get_by_text(OTHER_CELL, exact=True)).to_be_visible()
        cell_row = page.get_by_role("row").filter(has=page.get_by_text(CELL, exact=True))
        expect(page.get_by_text(children[0], exact=True)).to_have_count(0)  # collapsed
        cell_row.locator('button[data-component-id*="runnamecellrenderer"]').click()
        for name in children:
            expect(page.get_by_text(name, exact=True)).to_be_visible()
        for name in others:  # the other cell stays collapsed
            expect(page.get_by_text(name, exact=True)).to_have_count(0)
        page.screenshot(path=ARTIFACTS / "runs.png")

        page.get_by_text(children[0], exact=True).click()
        expect(page.get_by_role("heading", name=children[0])).to_be_visible()
        for tag in (
            "cell: default/rigl+sparseopt/s=0.9/e=2",
            "arm: rigl+sparseopt",
            "preconditioner: sparseopt",
            "sparsesweep.status: finished",
            "sparsesweep.role: trial",
        ):
            expect(page.get_by_text(tag, exact=True)).to_be_visible()
        page.screenshot(path=ARTIFACTS / "run.png", full_page=True)

        page.get_by_role("tab", name="Model metrics").click()
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has=page.get_by_text("val_acc1", exact=True)
        )
        expect(card.locator("path.point")).to_have_count(BUDGET)
        traces = card.locator(".js-plotly-plot").evaluate(
            "plot => plot.data.map(t => ({x: Array.from(t.x), y: Array.from(t.y)}))"
        )
        page.screenshot(path=ARTIFACTS / "val_acc1.png", full_page=True)
    port = ui_url.rsplit(":", 1)[1]
    host_statuses = {
        host: host_header_status(ui_url, host)
        for host in (f"127.0.0.1:{port}", f"{ALLOWED_HOST}:{port}", f"evil.example:{port}")
    }
    # MLflow's DNS-rebinding guard: localhost stays allowed, --allowed-hosts adds a name
    assert host_statuses == {
        f"127.0.0.1:{port}": 200,
        f"{ALLOWED_HOST}:{port}": 200,
        f"evil.example:{port}": 403,
    }
    assert traces, "the val_acc1 chart has no data"
    for trace in traces:
        assert trace == {"x": list(range(1, BUDGET + 1)), "y": store.val_acc1[children[0]]}
    print(f"dashboard screenshots: {ARTIFACTS}")


CURVE_BUDGETS = [2, 4]
PLOT_TIMEOUT_S = 120


def curve_results(number: int, meta: Any) -> list[dict[str, Any]]:
    """Every epoch to the budget; test accuracy rises with the epoch and the trial."""
    return [
        {"epoch": e, "val_acc1": 40.0 + 10 * e, "test_acc1": 40.0 + 10 * e + number}
        for e in range(1, meta.budget + 1)
    ]


def plotted(page: Any, plot: Any, traces: int) -> list[dict[str, list[float]]]:
    """The distinct (x, y) series of a plotly chart (MLflow draws a run's line and its markers as
    two traces), once `traces` series hold points."""
    deadline = time.monotonic() + PLOT_TIMEOUT_S
    script = "p => (p.data || []).map(t => ({x: Array.from(t.x || []), y: Array.from(t.y || [])}))"
    while True:
        found = [t for i, t in enumerate(plot.evaluate(script)) if t["x"]]
        found = [t for i, t in enumerate(found) if t not in found[:i]]
        if len(found) == traces:
            return found
        if time.monotonic() > deadline:
            pytest.fail(
                f"the chart did not show {traces} curves within {PLOT_TIMEOUT_S} s: {found}"
            )
        page.wait_for_timeout(1000)


CURVE_ARMS = ["dense", *SPEC["grid"]["arms"]]
CURVE_SPEC = {
    **SPEC,
    "name": "curves",
    "grid": {**SPEC["grid"], "arms": CURVE_ARMS, "budgets": CURVE_BUDGETS, "seeds": [0, 1, 2]},
}
CURVE_NAMES = ["curve dense s=0", *(f"curve {arm} s=0.9" for arm in SPEC["grid"]["arms"])]


def test_chart_view_of_the_curve_runs_shows_accuracy_against_budget(
    store: Store, ui_url: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page(browser, 1400) as page:
        page.goto(f"{ui_url}/#/experiments/{store.curves_experiment_id}/runs")
        search = page.get_by_test_id("search-box")
        search.click()
        page.keyboard.type("tags.`sparsesweep.role` = 'curve'")
        page.keyboard.press("Enter")
        for name in CURVE_NAMES:
            expect(page.get_by_text(name, exact=True)).to_be_visible()
        page.locator('label:has(input[name="runs-view-mode"][value="CHART"])').click()
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has=page.get_by_text("test_acc1_mean", exact=True)
        )
        plot = card.locator(".js-plotly-plot")
        expect(plot).to_have_count(1)
        traces = plotted(page, plot, len(CURVE_ARMS))
        page.screenshot(path=ARTIFACTS / "curves.png", full_page=True)
    assert len(traces) == len(CURVE_ARMS)
    for trace in traces:
        assert trace["x"] == CURVE_BUDGETS


def printed_link(log: Path, sweep: str) -> str:
    """The link `sparsesweep ui` printed for `sweep` (its line `sweep NAME: URL`)."""
    prefix = f"sweep {sweep}: "
    links = [
        line[len(prefix) :] for line in log.read_text().splitlines() if line.startswith(prefix)
    ]
    assert len(links) == 1, log.read_text()
    return links[0]


def test_the_printed_link_opens_every_arms_accuracy_against_budget(
    store: Store, ui_url: str, browser: Any
) -> None:
    """A fresh browser following the link `sparsesweep ui` prints lands in model-training mode
    on the curve runs of every arm (dense included), charted: the accuracy-vs-budget chart is
    on screen, one curve per arm, without a click."""
    from playwright.sync_api import expect

    link = printed_link(store.root / "ui.log", "curves")
    assert link.startswith(f"{ui_url}/#/experiments/{store.curves_experiment_id}/runs?")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page(browser, 1000) as page:
        page.goto(link)
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has=page.get_by_text("test_acc1_mean", exact=True)
        )
        plot = card.locator(".js-plotly-plot")
        expect(plot).to_have_count(1)
        expect(card).to_be_in_viewport()
        traces = plotted(page, plot, len(CURVE_ARMS))
        expect(page.get_by_text("Detect Issues")).to_have_count(0)
        page.screenshot(path=ARTIFACTS / "answer_link.png")
    assert sorted(trace["x"] for trace in traces) == [CURVE_BUDGETS] * len(CURVE_ARMS)
    log = (store.root / "ui.log").read_text()
    # quiet by default: no access-log line per request, no library deprecation warning
    assert '"GET /' not in log and "DeprecationWarning" not in log, log
