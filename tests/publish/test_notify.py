import json

import pyarrow as pa
import pyarrow.parquet as pq

from zerodoc.config import settings
from zerodoc.publish import store
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


def test_crash_between_outbox_and_ledger_sends_nothing_twice(zerodoc_home, monkeypatch):
    """A kill after the outbox write but before the ledger write: the retry must not repeat a line."""
    import zerodoc.publish.notify as notify

    cfg = settings()
    _publish(cfg, "2026-11-01.a", "2026-11-01", [("n1", "p1", "2026-11-01"), ("n2", "p2", "2026-11-01")])

    def killed(*_a, **_k):
        raise KeyboardInterrupt("killed between outbox and ledger")

    monkeypatch.setattr(notify, "write_json_atomic", killed)
    try:
        send_new_notifications(cfg)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    retry = send_new_notifications(cfg)
    ids = [json.loads(x)["notification_id"] for x in retry.outbox.read_text().splitlines()]
    assert ids == ["n1", "n2"]
    assert (retry.sent, retry.already_sent) == (0, 2)
    assert set(json.loads((notify.notifications_dir(cfg) / "sent.json").read_text())) == {"n1", "n2"}
