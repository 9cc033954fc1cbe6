"""A real browser against a real Airflow: log in, DAGs, graphs, assets, every auditor page, Data Docs.

Runs the pipeline on file stand-ins (no agency servers), starts `airflow standalone` on a free
port with SimpleAuthManager users admin (admin) and auditor (viewer), drives Debian's Chromium
with Playwright and saves screenshots under test-artifacts/ui/. Standalone is stopped with SIGINT
to its process group, then SIGKILL for anything left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from zerodoc.config import REPO_ROOT, settings

DS = "2026-11-20"
PERSONS = 3000
CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO_ROOT / "test-artifacts" / "ui"
STARTUP_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGINT)
        proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=15)


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (never a downloaded browser)")
    home = tmp_path_factory.mktemp("ui_home")
    os.environ["ZERODOC_HOME"] = str(home)
    cfg = settings()
    from zerodoc.orchestration.local import apply_airflow_env

    apply_airflow_env(cfg)
    from zerodoc.orchestration.pipeline import run_pipeline

    summary = run_pipeline(cfg, persons=PERSONS, seed=11, ds=DS, console=Console(quiet=True))
    assert summary.ok, summary.problems

    # Two evidence requests so the access-log page has records to filter and a chain to verify.
    from zerodoc.audit.log import AuditLog

    log = AuditLog(cfg.state_dir / "audit" / "evidence.log")
    for consumer, purpose in (("welfare-portal", "basic_livelihood_application"),
                              ("youth-bank", "youth_leap_account_eligibility")):
        log.append(consumer=consumer, purpose=purpose, dataset="residence_v1", decision="allow", status=200,
                   subject_pseudonym=secrets.token_hex(32), consent_id="consent-" + secrets.token_hex(4))

    port = _free_port()
    passwords = {"admin": secrets.token_urlsafe(12), "auditor": secrets.token_urlsafe(12)}
    pw_file = home / "simple_auth_passwords.json"
    pw_file.write_text(json.dumps(passwords))
    env = os.environ.copy()
    env.update({
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,auditor:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # standalone starts its components as `airflow ...` from PATH: the venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    log_path = home / "standalone.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "standalone"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow standalone exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"airflow standalone not up in {STARTUP_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield {"base": base, "passwords": passwords, "summary": summary, "cfg": cfg}
    finally:
        _stop(proc)
        os.environ.pop("ZERODOC_HOME", None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


def _login(browser, base: str, user: str, password: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    page.goto(f"{base}/auth/login")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
    assert any(c["name"] == "_token" for c in ctx.cookies()), "Airflow set no session token after login"
    return ctx, page


@pytest.mark.e2e
def test_operator_and_auditor_pages_in_a_real_browser(airflow_ui, browser):
    base, summary = airflow_ui["base"], airflow_ui["summary"]
    ctx, page = _login(browser, base, "admin", airflow_ui["passwords"]["admin"])
    try:
        page.goto(f"{base}/dags")
        page.get_by_text("ingest_mois").first.wait_for()
        page.get_by_text("publish_shared").first.wait_for()
        page.screenshot(path=SHOTS / "01-dag-list.png", full_page=True)

        page.goto(f"{base}/dags/ingest_mois")
        page.get_by_text("ingest_mois").first.wait_for()
        graph = page.get_by_role("button", name="Graph")
        if graph.count():
            graph.first.click()
        page.wait_for_timeout(3000)
        page.screenshot(path=SHOTS / "02-dag-graph.png", full_page=True)

        page.goto(f"{base}/assets")
        page.wait_for_timeout(3000)
        page.screenshot(path=SHOTS / "03-assets.png", full_page=True)
        first_asset = page.locator("a[href*='/assets/']").first
        if first_asset.count():
            first_asset.click()
            page.wait_for_timeout(4000)
        page.screenshot(path=SHOTS / "04-asset-graph.png", full_page=True)

        # The nav link: Airflow embeds the section at /plugin/<url_route>.
        page.goto(f"{base}/plugin/zerodoc-audit")
        page.locator("iframe").first.wait_for()
        page.wait_for_timeout(2000)
        page.screenshot(path=SHOTS / "05-nav-embedded.png", full_page=True)

        page.goto(f"{base}/zerodoc/runs")
        want = sum(v["quarantined"] for v in summary.entities.values())
        assert page.locator("#total-quarantined").inner_text() == str(want)
        for q, v in summary.entities.items():
            row = page.locator(f"tr[data-suite='{v['suite']}']").first
            assert row.locator("td.quarantined").inner_text() == str(v["quarantined"]), q
        page.screenshot(path=SHOTS / "06-validation-runs.png", full_page=True)

        page.locator("a", has_text="Data Docs").first.click()
        page.wait_for_load_state()
        assert "Expectation" in page.content() or "Validation" in page.content()
        page.screenshot(path=SHOTS / "07-data-docs.png", full_page=True)

        page.goto(f"{base}/zerodoc/publish")
        for name, pub in summary.published.items():
            assert pub["version"] in page.content(), name
        page.screenshot(path=SHOTS / "08-publish-history.png", full_page=True)

        page.goto(f"{base}/zerodoc/access")
        assert "2 matching records" in page.locator("#count").inner_text()
        page.locator("input[name=consumer]").fill("youth-bank")
        page.locator("form.filters button").click()
        page.wait_for_load_state()
        assert "1 matching records" in page.locator("#count").inner_text()
        page.screenshot(path=SHOTS / "09-access-log.png", full_page=True)
        page.locator("#verify").click()
        page.wait_for_load_state()
        assert "Chain intact" in page.locator("#verdict").inner_text()
        page.screenshot(path=SHOTS / "10-verify-chain.png", full_page=True)

        page.goto(f"{base}/zerodoc/catalog")
        assert "residence_v1" in page.content() and "welfare-portal" in page.content()
        page.screenshot(path=SHOTS / "11-catalog.png", full_page=True)

        # dbt docs of the run's build: the docs app loads manifest.json and renders a shared model's page.
        page.goto(f"{base}/zerodoc/dbt-docs/#!/model/model.zerodoc.residence_v1")
        page.locator("h1 span.break", has_text="residence_v1").filter(visible=True).first.wait_for()
        page.screenshot(path=SHOTS / "13-dbt-docs.png", full_page=True)

        # The validate task's extra link leads to that run's report in the auditor section
        # (its log line is checked in test_links.py: under pytest the run log file stays empty).
        qualified = next(q for q in summary.entities if q.startswith("mois."))
        task_id = f"validate_{qualified.split('.', 1)[1]}"
        token = next(c["value"] for c in ctx.cookies() if c["name"] == "_token")
        api = {"Authorization": f"Bearer {token}"}
        runs = ctx.request.get(f"{base}/api/v2/dags/ingest_mois/dagRuns", headers=api).json()["dag_runs"]
        # The standalone scheduler may have started runs of its own: take the pipeline's run of DS.
        run_id = next(r["dag_run_id"] for r in runs if (r.get("logical_date") or "").startswith(DS))
        links = ctx.request.get(f"{base}/api/v2/dags/ingest_mois/dagRuns/{run_id}/taskInstances/{task_id}/links",
                                headers=api).json()["extra_links"]
        link = links["ZeroDoc audit"]
        suite = summary.entities[qualified]["suite"]
        assert link.startswith(f"/zerodoc/reports/{suite}") and link.endswith("/report.html"), links
        page.goto(f"{base}{link}")
        assert suite in page.content()
        page.screenshot(path=SHOTS / "14-report-from-task-link.png", full_page=True)
        page.goto(f"{base}/dags/ingest_mois/runs/{run_id}/tasks/{task_id}")
        page.wait_for_timeout(4000)
        page.screenshot(path=SHOTS / "15-task-with-extra-link.png", full_page=True)
    finally:
        ctx.close()


@pytest.mark.e2e
def test_lineage_events_of_the_run_follow_the_openlineage_schema(airflow_ui):
    from tests.openlineage_spec import Spec, spec_dir
    from zerodoc import lineage

    events = lineage.read_events(airflow_ui["cfg"])
    assert {e["job"]["name"].split(".")[0] for e in events} >= {"extract", "validate", "dbt", "publish"}
    root = spec_dir()
    if root is None:
        pytest.skip("no OpenLineage spec files (OPENLINEAGE_SPEC_DIR); see tests/openlineage_spec.py")
    spec = Spec(root)
    assert {e["job"]["name"]: spec.errors(e) for e in events if spec.errors(e)} == {}


@pytest.mark.e2e
def test_auditor_reads_the_audit_pages_but_cannot_trigger_a_dag(airflow_ui, browser):
    base = airflow_ui["base"]
    ctx, page = _login(browser, base, "auditor", airflow_ui["passwords"]["auditor"])
    try:
        page.goto(f"{base}/zerodoc/runs")
        assert page.locator("#total-quarantined").count() == 1
        page.screenshot(path=SHOTS / "12-auditor-runs.png", full_page=True)
        token = next(c["value"] for c in ctx.cookies() if c["name"] == "_token")
        r = ctx.request.post(f"{base}/api/v2/dags/ingest_mois/dagRuns", data={"logical_date": None},
                             headers={"Authorization": f"Bearer {token}"})
        assert r.status == 403, r.text()
    finally:
        ctx.close()
    # And without any session the section is closed.
    assert httpx.get(f"{base}/zerodoc/runs", timeout=10, follow_redirects=False).status_code in (401, 303)
