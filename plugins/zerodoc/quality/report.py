"""Auditor-facing HTML: one page per validation run and an index of all runs."""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}.fail{color:#a00;font-weight:600}.ok{color:#070}.warn{color:#a60}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.9em}
"""


def mask_value(column: str, value: Any, is_identifier: bool) -> str:
    """Identifiers keep birth date and sex digit only (`800101-1******`); other values shown as-is."""
    if value is None:
        return "NULL"
    text = str(value)
    if is_identifier:
        return text[:8] + "*" * max(len(text) - 8, 0) if len(text) > 8 else "*" * len(text)
    if column == "name":
        return text[:1] + "*" * (len(text) - 1)
    return text


def _severity_class(check: dict[str, Any]) -> str:
    return "fail" if check["severity"] == "fail" else "warn"


def _outcome(check: dict[str, Any]) -> str:
    """What the check did to this partition, in the report's words: a check that found rows did not
    "fail" the run (the gate decides that), it quarantined or reported them."""
    if check["unexpected_count"] == 0:
        return "clean"
    return "rows quarantined" if check["severity"] == "fail" else "rows reported"


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _what_was_checked(extraction: dict[str, Any] | None) -> str:
    """One sentence for the auditor: the whole table, or only the rows that changed in a window."""
    if not extraction or extraction.get("mode") != "incremental":
        why = f" ({escape(extraction['reason'])})" if extraction and extraction.get("reason") else ""
        return f"Checked: a full snapshot of the source table{why}."
    w = extraction.get("window", {})
    read_from = w.get("read_low") or w.get("low") or "the beginning"
    return (
        f"Checked: an incremental window, the rows changed after {escape(str(w.get('low') or 'the beginning'))} "
        f"up to {escape(str(w.get('high')))} (read from {escape(str(read_from))} to catch late rows). "
        "Rows that did not change were checked on the day they last changed; who is still quarantined "
        "carries over until a valid version replaces the rejected one or the next full snapshot."
    )


def render_report(summary: dict[str, Any], samples: list[dict[str, Any]], suite: Any) -> str:
    gate = summary["gate"]
    gate_html = (
        f'<p class="{"ok" if gate["passed"] else "fail"}">Gate {"passed" if gate["passed"] else "FAILED"}: '
        f"{escape(gate['message'])}</p>"
    )
    rows = "".join(
        f"<tr><td><code>{escape(c['id'])}</code></td><td>{escape(c['description'])}</td>"
        f'<td class="{_severity_class(c)}">{c["severity"]}</td>'
        f'<td class="n">{summary["extracted"] - c["unexpected_count"]}</td>'
        f'<td class="n">{c["unexpected_count"]}</td><td class="n">{c["unexpected_percent"]:.3f}</td>'
        f'<td class="{"ok" if c["unexpected_count"] == 0 else _severity_class(c)}">{_outcome(c)}</td></tr>'
        for c in summary["checks"]
    )
    by_reason = (
        "".join(
            f'<tr><td><code>{escape(k)}</code></td><td class="n">{v}</td></tr>'
            for k, v in summary["quarantine_by_reason"].items()
        )
        or '<tr><td colspan="2">No row was quarantined.</td></tr>'
    )
    sample_html = ""
    if samples:
        cols = list(samples[0]["values"])
        head = "".join(f"<th>{escape(c)}</th>" for c in cols) + "<th>reasons</th>"
        body = "".join(
            "<tr>"
            + "".join(f"<td>{escape(s['values'][c])}</td>" for c in cols)
            + f"<td>{escape(', '.join(s['reasons']))}</td></tr>"
            for s in samples
        )
        sample_html = (
            "<h2>Sample rejected rows</h2><p>First rows of the quarantine in source order; "
            "registration numbers are masked.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
        )
    body = f"""
<h1>Validation of {escape(summary["entity"])} for {escape(summary["logical_date"])}</h1>
<p>Run <code>{escape(summary["run_id"])}</code> &middot; suite <code>{escape(summary["suite"])}</code>
version {summary["suite_version"]} (sha256 <code>{escape(summary["suite_hash"][:12])}</code>) &middot;
data checksum <code>{escape(summary["data_checksum"])}</code></p>
<p>{escape(suite.description)}</p>
<p>{_what_was_checked(summary.get("extraction"))}</p>
{gate_html}
<table><tr><th>extracted</th><th>passed</th><th>quarantined</th></tr>
<tr><td class="n">{summary["extracted"]}</td><td class="n">{summary["passed"]}</td>
<td class="n">{summary["quarantined"]}</td></tr></table>
<h2>Checks</h2>
<p>A <span class="fail">fail</span> check sends the row to quarantine; a <span class="warn">warn</span> check
is reported and the row passes. The gate fails when a fail check rejects more than
{summary["gate"]["max_fail_percent"]}% of rows.</p>
<table><tr><th>check</th><th>what it means</th><th>severity</th><th>rows passing</th><th>rows failing</th>
<th>% failing</th><th>outcome</th></tr>{rows}</table>
<h2>Quarantine by reason</h2>
<p>A row failing several checks is quarantined once and counted under each reason.</p>
<table><tr><th>check</th><th>rows</th></tr>{by_reason}</table>
{sample_html}
<p><a href="data_docs/index.html">Great Expectations Data Docs for this run</a> &middot;
<a href="summary.json">summary.json</a> &middot; <a href="../../index.html">all runs</a></p>
"""
    return _page(f"Validation {summary['run_id']}", body)


def render_index(runs: list[dict[str, Any]]) -> str:
    runs = sorted(runs, key=lambda r: (r["logical_date"], r["suite"]), reverse=True)
    rows = "".join(
        f"<tr><td>{escape(r['logical_date'])}</td><td>{escape(r['suite'])} v{r['suite_version']}</td>"
        f'<td><a href="validation/{escape(r["run_id"])}/report.html">{escape(r["run_id"])}</a></td>'
        f'<td class="n">{r["extracted"]}</td><td class="n">{r["passed"]}</td>'
        f'<td class="n">{r["quarantined"]}</td>'
        + ('<td class="ok">passed</td>' if r["gate"]["passed"] else '<td class="fail">FAILED</td>')
        + f'<td><a href="validation/{escape(r["run_id"])}/data_docs/index.html">Data Docs</a></td></tr>'
        for r in runs
    )
    body = (
        "<h1>ZeroDoc validation runs</h1>"
        "<table><tr><th>logical date</th><th>suite</th><th>run</th><th>extracted</th><th>passed</th>"
        f"<th>quarantined</th><th>gate</th><th></th></tr>{rows}</table>"
    )
    return _page("ZeroDoc validation runs", body)
