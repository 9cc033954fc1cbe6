"""Alerts through pluggable notifiers (log, webhook, your own), an Airflow failure callback, and
freshness: a shared dataset is stale when its current version is older than its SLA.

Freshness SLA: ``freshness_hours`` per dataset in ``config/datasets.yml`` (default 36). A
version published for logical date D holds data up to the end of D, so it is stale once
``now - (D + 1 day) > freshness_hours``; a dataset never published is stale too.

Notifiers: the log always; a webhook when ``ZERODOC_ALERT_WEBHOOK_URL`` is set (JSON POST);
more via ``ZERODOC_ALERT_NOTIFIERS=package.module:Factory,...`` (each factory returns an object
with ``send(alert)``). Sending never raises: a broken notifier must not hide the first failure.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import yaml

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings

log = logging.getLogger(__name__)

DEFAULT_FRESHNESS_HOURS = 36.0


@dataclass(frozen=True)
class Alert:
    kind: str  # task_failed | dataset_stale | sla_missed
    title: str
    severity: str = "error"  # error | warning
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"source": "zerodoc", **asdict(self)}


class Notifier(Protocol):
    def send(self, alert: Alert) -> None: ...


class LogNotifier:
    def send(self, alert: Alert) -> None:
        level = logging.ERROR if alert.severity == "error" else logging.WARNING
        log.log(level, "ALERT %s: %s %s", alert.kind, alert.title, alert.details)


class WebhookNotifier:
    """POSTs the alert as JSON (Slack/Teams/Mattermost relays, Alertmanager-style receivers, ...)."""

    def __init__(self, url: str, timeout: float = 5.0, retries: int = 2):
        self.url, self.timeout, self.retries = url, timeout, retries

    def send(self, alert: Alert) -> None:
        import httpx

        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                r = httpx.post(self.url, json=alert.to_json(), timeout=self.timeout)
                r.raise_for_status()
                return
            except httpx.HTTPError as exc:
                last = exc
        raise RuntimeError(f"webhook {self.url} refused the alert: {last}")


def notifiers_from_env() -> list[Notifier]:
    out: list[Notifier] = [LogNotifier()]
    if url := os.environ.get("ZERODOC_ALERT_WEBHOOK_URL"):
        out.append(WebhookNotifier(url))
    for spec in filter(None, (s.strip() for s in os.environ.get("ZERODOC_ALERT_NOTIFIERS", "").split(","))):
        module, _, attr = spec.partition(":")
        out.append(getattr(importlib.import_module(module), attr)())
    return out


def notify(alert: Alert, notifiers: list[Notifier] | None = None) -> list[str]:
    """Send to every notifier; returns the errors (also logged) instead of raising."""
    errors = []
    for n in notifiers if notifiers is not None else notifiers_from_env():
        try:
            n.send(alert)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not silence the others
            errors.append(f"{type(n).__name__}: {exc}")
            log.warning("alert %s not delivered by %s: %s", alert.kind, type(n).__name__, exc)
    return errors


def task_failure_alert(context: dict[str, Any]) -> Alert:
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    details = {
        "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "logical_date": str(context.get("logical_date") or context.get("ds") or ""),
        "error": f"{type(exc).__name__}: {exc}" if exc else None,
        "log_url": getattr(ti, "log_url", None),
    }
    return Alert("task_failed", f"{details['dag_id']}.{details['task_id']} failed", "error", details)


def on_failure_callback(context: dict[str, Any]) -> None:
    """Airflow ``on_failure_callback`` for tasks (and DAG runs)."""
    notify(task_failure_alert(context))


# ---- freshness -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    dataset: str
    freshness_hours: float
    version: str | None
    as_of: str | None
    age_hours: float | None  # since the end of as_of; None when never published
    stale: bool


def age_hours(as_of: str, now: datetime) -> float:
    """Hours since the end of the logical date a version holds data for."""
    end_of_as_of = datetime.fromisoformat(str(as_of)[:10]).replace(tzinfo=UTC) + timedelta(days=1)
    return (now - end_of_as_of).total_seconds() / 3600


def is_stale(as_of: str | None, sla_hours: float, now: datetime) -> bool:
    return as_of is None or age_hours(as_of, now) > sla_hours


def freshness_hours(cfg: Settings) -> dict[str, float]:
    doc = yaml.safe_load((cfg.config_dir / "datasets.yml").read_text(encoding="utf-8"))
    return {name: float(spec.get("freshness_hours", DEFAULT_FRESHNESS_HOURS)) for name, spec in doc["datasets"].items()}


def freshness(cfg: Settings, now: datetime) -> list[Freshness]:
    from zerodoc.publish import store

    out = []
    for name, sla in freshness_hours(cfg).items():
        try:
            meta = store.current(name, cfg).metadata
        except (store.NotPublishedError, OSError, ValueError, KeyError):
            out.append(Freshness(name, sla, None, None, None, True))
            continue
        age = age_hours(meta["as_of"], now)
        out.append(Freshness(name, sla, meta["version"], str(meta["as_of"]), round(age, 2), age > sla))
    return out


def stale_datasets(cfg: Settings | None, now: datetime) -> list[Freshness]:
    return [f for f in freshness(cfg or load_settings(), now) if f.stale]


def check_freshness(cfg: Settings | None, now: datetime, notifiers: list[Notifier] | None = None) -> list[Freshness]:
    """Alert once per stale dataset; for a scheduled task or an Airflow deadline/SLA callback."""
    stale = stale_datasets(cfg, now)
    for f in stale:
        what = ("was never published" if f.version is None
                else f"is {f.age_hours:.1f} h old (SLA {f.freshness_hours:g} h)")
        notify(Alert("dataset_stale", f"{f.dataset} {what}", "warning", asdict(f)), notifiers)
    return stale
