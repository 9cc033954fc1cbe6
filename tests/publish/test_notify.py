import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.config import settings
from zerodoc.publish import notify, store
from zerodoc.publish.notify import send_new_notifications


def _publish(cfg, version, as_of, rows):
    d = store.dataset_dir("benefit_notifications_v1", cfg) / "versions" / version
    d.mkdir(parents=True)
    pq.write_table(pa.table({
        "notification_id": [r[0] for r in rows], "subject_pseudonym": [r[1] for r in rows],
        "programme": ["youth_leap_account"] * len(rows), "rule_id": ["YLA-2023-06"] * len(rows),
        "reason": ["age 19-34, income within limits"] * len(rows),
        "eligible_on": pa.array([r[2] for r in rows], pa.string()).cast(pa.date32()),
    }), d / "data.parquet")
    (d / "metadata.json").write_text(json.dumps({"version": version, "as_of": as_of, "row_count": len(rows),
                                                 "validation_runs": []}))
    store.switch_current("benefit_notifications_v1", version, "publish", cfg)


def test_run_twice_notify_once(zerodoc_home):
    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01"), ("n2", "p2", "2026-11-01"),
                                                 ("n0", "p0", "2026-10-01")])
    first = send_new_notifications(cfg)
    second = send_new_notifications(cfg)
    assert (first.candidates, first.sent) == (2, 2)  # n0 became eligible earlier: not new today
    assert (second.sent, second.already_sent) == (0, 2)
    lines = [json.loads(x) for x in first.outbox.read_text().splitlines()]
    assert [x["notification_id"] for x in lines] == ["n1", "n2"]
    assert lines[0]["recipient_pseudonym"] == "p1" and "rrn" not in lines[0]


def test_next_day_sends_only_the_newly_eligible(zerodoc_home):
    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01")])
    send_new_notifications(cfg)
    _publish(cfg, "2026-11-02.b", "2026-11-02", [("n1", "p1", "2026-11-01"), ("n3", "p3", "2026-11-02")])
    r = send_new_notifications(cfg)
    assert (r.sent, r.outbox.name) == (1, "2026-11-02.jsonl")
    assert json.loads(r.outbox.read_text())["notification_id"] == "n3"


def _ledger_ids(cfg) -> set[str]:
    paths = sorted(notify.ledger_dir(cfg).glob("*.parquet"))
    return {i for p in paths for i in pq.read_table(p, columns=["notification_id"]).column(0).to_pylist()}


def _kill_before_ledger(monkeypatch):
    """The next ledger write raises as a kill would, after the outbox has been renamed into place."""
    real = notify._index_outbox

    def killed(con, outbox, cfg):
        monkeypatch.setattr(notify, "_index_outbox", real)
        raise KeyboardInterrupt("killed between outbox and ledger")

    monkeypatch.setattr(notify, "_index_outbox", killed)


def test_crash_between_outbox_and_ledger_sends_nothing_twice(zerodoc_home, monkeypatch):
    """A kill after the outbox write but before the ledger write: the retry must not repeat a line."""
    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01"), ("n2", "p2", "2026-11-01")])
    _kill_before_ledger(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        send_new_notifications(cfg)
    assert _ledger_ids(cfg) == set()  # the kill came before the ledger knew
    retry = send_new_notifications(cfg)
    ids = [json.loads(x)["notification_id"] for x in retry.outbox.read_text().splitlines()]
    assert ids == ["n1", "n2"]
    assert (retry.sent, retry.already_sent) == (0, 2)
    assert _ledger_ids(cfg) == {"n1", "n2"}


def test_crash_on_one_day_is_recovered_on_the_next(zerodoc_home, monkeypatch):
    """No retry of the crashed date: the next date's run still sees what that outbox holds, and a rerun of
    a date that adds lines to its outbox, killed before its ledger, is not taken as indexed."""
    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01")])
    send_new_notifications(cfg)
    _publish(cfg, "2026-11-01.b", "2026-11-01", [("n1", "p1", "2026-11-01"), ("n2", "p2", "2026-11-01")])
    _kill_before_ledger(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        send_new_notifications(cfg)  # the 2026-11-01 outbox now holds n1 and n2; its ledger file only n1
    assert _ledger_ids(cfg) == {"n1"}
    _publish(cfg, "2026-11-02.c", "2026-11-02",
             [("n1", "p1", "2026-11-02"), ("n2", "p2", "2026-11-02"), ("n3", "p3", "2026-11-02")])
    r = send_new_notifications(cfg)
    assert (r.candidates, r.sent, r.already_sent) == (3, 1, 2)
    assert [json.loads(x)["notification_id"] for x in r.outbox.read_text().splitlines()] == ["n3"]
    first_day = [json.loads(x) for x in (r.outbox.parent / "2026-11-01.jsonl").read_text().splitlines()]
    assert [(x["notification_id"], x["dataset_version"]) for x in first_day] == [("n1", "2026-11-01.a"),
                                                                                ("n2", "2026-11-01.b")]


def test_outbox_lines_keep_unicode_and_every_field(zerodoc_home):
    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01")])
    r = send_new_notifications(cfg)
    raw = r.outbox.read_bytes()
    assert {p.stat().st_mode & 0o777 for p in (r.outbox, *notify.ledger_dir(cfg).iterdir())} == {0o600}
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw) == {"dataset_version": "2026-11-01.a", "notification_id": "n1", "programme":
                               "youth_leap_account", "reason": "age 19-34, income within limits",
                               "recipient_pseudonym": "p1", "rule_id": "YLA-2023-06"}  # fmt: skip


def test_old_json_ledger_is_carried_over(zerodoc_home):
    """A ledger written before it was Parquet (sent.json) still counts: nothing in it is sent again."""
    cfg = settings()
    legacy = notify.notifications_dir(cfg) / notify.LEGACY_LEDGER
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"n1": "2026-10-01.z"}))
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01"), ("n2", "p2", "2026-11-01")])
    r = send_new_notifications(cfg)
    assert (r.sent, r.already_sent) == (1, 1)
    assert not legacy.exists() and _ledger_ids(cfg) == {"n1", "n2"}
