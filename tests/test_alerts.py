"""Alerts reach a real webhook on loopback; freshness follows each dataset's SLA."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from zerodoc import alerts
from zerodoc.config import REPO_ROOT, Settings


@pytest.fixture()
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(5)


class FakeTI:
    dag_id, task_id, run_id, try_number = "ingest_mois", "validate_residents", "scheduled__2026-11-20", 2
    log_url = "http://airflow/log"


def test_failure_callback_delivers_to_the_loopback_webhook(webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("ZERODOC_ALERT_WEBHOOK_URL", url)
    alerts.on_failure_callback({"ti": FakeTI(), "exception": ValueError("gate closed"), "ds": "2026-11-20"})
    assert len(received) == 1
    got = received[0]
    assert got["kind"] == "task_failed" and got["source"] == "zerodoc"
    assert got["details"]["dag_id"] == "ingest_mois" and got["details"]["error"] == "ValueError: gate closed"


def test_a_dead_webhook_is_reported_not_raised():
    errors = alerts.notify(alerts.Alert("task_failed", "x"), [alerts.WebhookNotifier("http://127.0.0.1:9/", 0.5, 0)])
    assert len(errors) == 1 and "WebhookNotifier" in errors[0]


@pytest.fixture()
def cfg(tmp_path):
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    doc = yaml.safe_load((REPO_ROOT / "config" / "datasets.yml").read_text())
    # income_v1 gets a tight SLA; residence_v1 keeps the default.
    doc["datasets"]["income_v1"]["freshness_hours"] = 6
    doc["datasets"]["residence_v1"].pop("freshness_hours", None)
    (repo / "config" / "datasets.yml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    shutil.copy(REPO_ROOT / "config" / "sources.yml", repo / "config" / "sources.yml")
    c = Settings(home=tmp_path / "home", repo=repo)
    for ds in ("income_v1", "residence_v1"):
        v = c.published_dir / ds / "versions" / "2026-11-20.x"
        v.mkdir(parents=True)
        (v / "metadata.json").write_text(json.dumps({"version": "2026-11-20.x", "as_of": "2026-11-20"}))
        (c.published_dir / ds / "CURRENT.json").write_text(json.dumps({"version": "2026-11-20.x"}))
    return c


def test_freshness_follows_each_datasets_sla(cfg):
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # 12 h after the end of as_of
    by_name = {f.dataset: f for f in alerts.freshness(cfg, now)}
    assert by_name["income_v1"].stale and by_name["income_v1"].freshness_hours == 6
    assert not by_name["residence_v1"].stale and by_name["residence_v1"].freshness_hours == 36
    assert by_name["household_v1"].stale and by_name["household_v1"].version is None  # never published
    later = {f.dataset for f in alerts.stale_datasets(cfg, datetime(2026, 11, 23, 0, 1, tzinfo=UTC))}
    assert {"income_v1", "residence_v1"} <= later


def test_stale_datasets_alert_the_webhook(cfg, webhook):
    url, received = webhook
    stale = alerts.check_freshness(cfg, datetime(2026, 11, 21, 12, 0, tzinfo=UTC), [alerts.WebhookNotifier(url)])
    assert {a["details"]["dataset"] for a in received} == {f.dataset for f in stale}
    assert any(a["details"]["dataset"] == "income_v1" and a["kind"] == "dataset_stale" for a in received)
