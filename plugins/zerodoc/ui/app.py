"""The auditor section: server-rendered HTML mounted in Airflow's API server under /zerodoc.

Access follows Airflow's auth: the request's Airflow JWT (the UI's session cookie or a bearer
token) is resolved by Airflow's own ``get_user`` dependency and checked with the configured
auth manager; anyone allowed to read Airflow's UI (the viewer role and up) may read these pages,
and nothing here changes state except re-reading the audit chain.
"""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerodoc.audit.log import AuditError
from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.ui import data

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:90rem}
nav a{margin-right:1rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#a00;font-weight:600}.ok{color:#070;font-weight:600}.warn{color:#a60}
code{font-size:.9em}form.filters label{margin-right:.8rem}
"""

NAV = (("runs", "Validation runs"), ("data-docs", "Data Docs"), ("publish", "Publish history"),
       ("access", "Evidence access log"), ("catalog", "Dataset catalog"), ("dbt-docs/", "dbt docs"))


def require_reader() -> Any:
    """Replaced in every app by ``create_app`` (Airflow's auth, or a test's stand-in)."""
    raise HTTPException(status_code=401, detail="Not authenticated")


ReaderDep = Annotated[Any, Depends(require_reader)]


def airflow_reader() -> Any:
    """Airflow's own auth as a dependency: JWT from the UI's ``_token`` cookie or a bearer header,
    resolved by ``get_user`` and checked by the configured auth manager (viewer role and up)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    async def reader(user=Depends(get_user)) -> Any:  # noqa: B008 - FastAPI's idiom
        if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
            raise HTTPException(status_code=403, detail="Your Airflow role may not read the ZeroDoc auditor pages")
        return user

    return reader


def _login_redirect(request: Request, exc: StarletteHTTPException) -> Response:
    """Browsers without a session go through Airflow's login page and come back; API clients get JSON."""
    from fastapi.responses import JSONResponse, RedirectResponse

    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        try:
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
        except Exception:  # noqa: BLE001 - outside Airflow there is no login page to send to
            login = None
        if login:
            return RedirectResponse(login, status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _page(title: str, body: str, user: Any = None) -> HTMLResponse:
    who = ""
    if user is not None and hasattr(user, "get_name"):
        who = f'<span style="float:right">signed in as {escape(str(user.get_name()))}</span>'
    nav = "".join(f'<a href="{href}">{escape(label)}</a>' for href, label in NAV)
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ZeroDoc · {escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><nav>{who}<strong>ZeroDoc audit</strong> · {nav}</nav>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(data.mask_text(html))


def _unreadable(title: str, why: object, source: str, user: Any) -> HTMLResponse:
    """The log could not be read (e.g. PostgreSQL down): say so, rather than show an empty or broken log."""
    page = _page(title, f'{source}<p id=unavailable class="fail">The audit log cannot be read: {escape(str(why))}</p>',
                 user)
    page.status_code = 503
    return page


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _safe_file(root: Path, rel: str) -> Path:
    root = root.resolve()
    target = (root / rel).resolve()
    if root not in target.parents or not target.is_file():
        raise HTTPException(status_code=404, detail="no such report file")
    return target


def create_app(cfg: Settings | None = None, reader: Any = None) -> FastAPI:
    """The app Airflow mounts; ``reader`` replaces Airflow's auth dependency (tests only)."""
    app = FastAPI(title="ZeroDoc auditor pages", docs_url=None, redoc_url=None, openapi_url=None)
    app.dependency_overrides[require_reader] = reader if reader is not None else airflow_reader()
    app.add_exception_handler(StarletteHTTPException, _login_redirect)

    def cfg_now() -> Settings:
        return cfg or load_settings()

    @app.get("/", response_class=HTMLResponse)
    def index(user: ReaderDep):
        items = "".join(f'<li><a href="{h}">{escape(label)}</a></li>' for h, label in NAV)
        return _page("Auditor section", f"<ul>{items}</ul>", user)

    @app.get("/runs", response_class=HTMLResponse)
    def runs(user: ReaderDep):
        rows = []
        totals = {"extracted": 0, "passed": 0, "quarantined": 0}
        for s in data.validation_runs(cfg_now()):
            for k in totals:
                totals[k] += int(s.get(k, 0))
            gate = s.get("gate", {})
            d = escape(s["_dir"])
            docs = f'<a href="reports/{d}/data_docs/index.html">Data Docs</a>' if s["_has_data_docs"] else "—"
            rows.append(
                f'<tr data-suite="{escape(s.get("suite", ""))}"><td><code>{escape(s.get("suite", ""))}</code></td>'
                f'<td>{escape(s.get("logical_date", ""))}</td><td><code>{escape(s.get("run_id", ""))}</code></td>'
                f'<td class="n">{s.get("extracted")}</td><td class="n">{s.get("passed")}</td>'
                f'<td class="n quarantined">{s.get("quarantined")}</td>'
                f'<td class="{"ok" if gate.get("passed") else "fail"}">'
                f'{"passed" if gate.get("passed") else "FAILED"}</td>'
                f'<td><a href="reports/{d}/report.html">report</a> · {docs}</td></tr>'
            )
        body = (
            "<p>One row per suite run (GX at the agency boundary). extracted = passed + quarantined holds for every"
            " run; a FAILED gate blocks publishing of the datasets fed by that entity.</p>"
            "<table id=runs><tr><th>suite</th><th>logical date</th><th>run id</th><th>extracted</th><th>passed</th>"
            "<th>quarantined</th><th>gate</th><th>links</th></tr>" + "".join(rows) + "</table>"
            f'<p id=totals>Total: extracted {totals["extracted"]}, passed {totals["passed"]}, '
            f'quarantined <span id=total-quarantined>{totals["quarantined"]}</span>.</p>'
        ) if rows else "<p>No validation run yet.</p>"
        return _page("Validation runs", body, user)

    @app.get("/reports/{run_dir}/{rel:path}")
    def report_file(run_dir: str, rel: str, user: ReaderDep):
        base = cfg_now().reports_dir / "validation"
        target = _safe_file(base, f"{run_dir}/{rel}")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        content = target.read_bytes()
        if media.startswith("text/") or media in ("application/json", "application/javascript"):
            # GX Data Docs keep a few unexpected values per check: mask IDs before they leave.
            content = data.mask_text(content.decode("utf-8", errors="replace")).encode("utf-8")
        return Response(content, media_type=media)

    @app.get("/data-docs", response_class=HTMLResponse)
    def data_docs(user: ReaderDep):
        items = "".join(
            f'<li><a href="reports/{escape(r["_dir"])}/data_docs/index.html">{escape(r.get("suite", ""))}'
            f' · {escape(r.get("logical_date", ""))}</a> <code>{escape(r.get("run_id", ""))}</code></li>'
            for r in data.validation_runs(cfg_now()) if r["_has_data_docs"]
        )
        body = ("<p>Great Expectations Data Docs of each validation run (expectations, results, the check that"
                " failed); newest logical date first.</p>" + (f"<ul id=data-docs>{items}</ul>" if items else
                                                              "<p>No validation run has Data Docs yet.</p>"))
        return _page("Data Docs", body, user)

    @app.get("/dbt-docs", include_in_schema=False)
    def dbt_docs_slash(user: ReaderDep):
        from fastapi.responses import RedirectResponse

        return RedirectResponse("dbt-docs/", status_code=307)

    @app.get("/dbt-docs/{name:path}")
    def dbt_docs(user: ReaderDep, name: str = ""):
        from zerodoc.ui.dbt_docs import FILES, docs_dir

        name = name or "index.html"
        path = docs_dir(cfg_now()) / name
        if name not in FILES or not path.is_file():
            if name == "index.html":
                return _page("dbt docs", "<p id=no-dbt-docs>No dbt docs yet: they are generated by the"
                             " <code>dbt_build</code> task of <code>publish_shared</code>; run that DAG.</p>", user)
            raise HTTPException(status_code=404, detail="no such dbt docs file")
        media = "text/html" if name.endswith(".html") else "application/json"
        return Response(data.mask_text(path.read_text(encoding="utf-8")).encode("utf-8"), media_type=media)

    @app.get("/publish", response_class=HTMLResponse)
    def publish(user: ReaderDep):
        parts = []
        for h in data.publish_history(cfg_now()):
            vrows = "".join(
                f'<tr><td><code>{escape(v.get("version", ""))}</code>'
                f'{" (current)" if v.get("version") == h.current else ""}'
                f'</td><td>{escape(str(v.get("as_of", "")))}</td><td class="n">{v.get("row_count", "")}</td>'
                f'<td><code>{escape(str(v.get("contract_hash", ""))[:16])}</code></td>'
                f'<td>{"<br>".join(f"<code>{escape(r)}</code>" for r in v.get("validation_runs", []))}</td></tr>'
                for v in h.versions
            )
            srows = "".join(
                f'<tr class="{"warn" if str(s.get("reason", "")).startswith("rollback") else ""}">'
                f'<td><code>{escape(str(s.get("previous")))}</code></td>'
                f'<td><code>{escape(str(s.get("version")))}</code>'
                f'</td><td>{escape(str(s.get("reason", "")))}</td></tr>'
                for s in h.switches
            )
            rollbacks = sum(1 for s in h.switches if str(s.get("reason", "")).startswith("rollback"))
            parts.append(
                f'<h2 id="ds-{escape(h.dataset)}">{escape(h.dataset)}</h2>'
                f'<p>current <code>{escape(str(h.current))}</code>'
                f" · {len(h.switches)} switches · {rollbacks} rollbacks</p>"
                "<table><tr><th>version</th><th>as_of</th><th>rows</th><th>contract hash</th>"
                f"<th>validation runs that fed it</th></tr>{vrows}</table>"
                f"<details><summary>switch history</summary><table><tr><th>from</th><th>to</th><th>reason</th></tr>"
                f"{srows}</table></details>"
            )
        return _page("Publish history", "".join(parts) or "<p>Nothing published yet.</p>", user)

    @app.get("/access", response_class=HTMLResponse)
    def access(
        user: ReaderDep,
        consumer: str | None = None,
        purpose: str | None = None,
        dataset: str | None = None,
        date: str | None = None,
    ):
        c = cfg_now()
        log = data.evidence_log(c)
        source = f"<p id=source>Log read: <code>{escape(log.describe())}</code></p>"
        try:
            recs, total = data.access_records(
                c, consumer or None, purpose or None, dataset or None, date or None, log=log)
        except AuditError as exc:
            return _unreadable("Evidence access log", exc, source, user)
        cols = ("seq", "ts", "consumer", "purpose", "evidence_type", "dataset", "dataset_version",
                "subject_pseudonym", "consent_id", "fields", "decision", "status", "reason")
        head = "".join(f"<th>{k}</th>" for k in cols)
        body_rows = "".join(
            "<tr>" + "".join(
                f"<td>{escape(_cell(r.get(k)))}</td>"
                for k in cols) + "</tr>"
            for r in recs
        )
        def field(name: str, value: str | None) -> str:
            return f'<label>{name} <input name="{name}" value="{escape(value or "")}"></label>'
        form = (
            '<form class=filters method=get>' + field("consumer", consumer) + field("purpose", purpose)
            + field("dataset", dataset) + field("date", date) + '<button type=submit>Filter</button></form>'
            '<form method=post action="access/verify"><button id=verify type=submit>Verify chain</button></form>'
        )
        shown = (f"<p id=count>{total} matching records (newest first, at most 500 shown). "
                 "Subject pseudonyms and consent references are truncated.</p>")
        table = f"<table id=access><tr>{head}</tr>{body_rows}</table>"
        return _page("Evidence access log", form + source + shown + table, user)

    @app.post("/access/verify", response_class=HTMLResponse)
    def verify(user: ReaderDep):
        from zerodoc.audit.reader import unreadable

        log = data.evidence_log(cfg_now())
        source = f"<p id=source>Log checked: <code>{escape(log.describe())}</code></p>"
        why = unreadable(log)
        if why:
            return _unreadable("Audit chain verification", why, source, user)
        r = log.verify()  # the file's or PostgreSQL's own chain walk, as `zerodoc audit verify` runs it
        when = datetime.now(UTC).isoformat(timespec="seconds")
        cls = "ok" if r.ok else "fail"
        body = (
            f'{source}<p id=verdict class="{cls}">{"Chain intact" if r.ok else "Chain BROKEN"}: {escape(r.message)}</p>'
            f"<p>Records checked: {r.records}; first bad record: {r.first_bad_seq or '—'}; head hash "
            f"<code>{escape(r.head_hash or '—')}</code> (checked {when}). Keep the head hash elsewhere to detect"
            " a truncated tail.</p><p><a href=\"../access\">back to the log</a></p>"
        )
        return _page("Audit chain verification", body, user)

    @app.get("/catalog", response_class=HTMLResponse)
    def catalog(user: ReaderDep):
        from zerodoc.alerts import freshness
        from zerodoc.api.policy import load_policy, policy_path
        from zerodoc.catalog import datasets
        from zerodoc.publish import store

        c = cfg_now()
        policy = load_policy(policy_path(c))
        fresh = {f.dataset: f for f in freshness(c, datetime.now(UTC))}
        parts = []
        for name, spec in datasets().items():
            try:
                meta = store.current(name, c).metadata
                cols = meta.get("columns", [])
                as_of = f'current version <code>{escape(meta["version"])}</code>, as_of {escape(str(meta["as_of"]))}'
            except (store.NotPublishedError, OSError, ValueError, KeyError):
                cols, as_of = [], "not published yet"
            grants = [g for g in policy.grants.values() if g.dataset == name]
            consumers = sorted({(g.consumer, g.purpose.name) for g in grants})
            head = "<th>column</th><th>type</th>" + "".join(
                f"<th>{escape(cn)}<br><small>{escape(p)}</small></th>" for cn, p in consumers)
            rows = ""
            for col, typ in cols:
                cells = "".join(
                    "<td>✓</td>" if col in policy.grants[(cn, name, p)].fields else "<td></td>" for cn, p in consumers)
                rows += f"<tr><td><code>{escape(col)}</code></td><td>{escape(typ)}</td>{cells}</tr>"
            legal = "".join(
                f"<li><strong>{escape(g.consumer)}</strong> for <code>{escape(g.purpose.name)}</code>: "
                f"{escape(g.purpose.legal_basis)}</li>" for g in grants)
            f = fresh.get(name)
            badge = ""
            if f is not None:
                badge = (f' <span class="fail stale">STALE</span> (SLA {f.freshness_hours:g} h)' if f.stale
                         else f' <span class="ok fresh">fresh</span> (SLA {f.freshness_hours:g} h)')
            parts.append(
                f'<h2 id="cat-{escape(name)}">{escape(name)}{badge}</h2><p>{escape(spec.description)}</p>'
                f"<p>inputs: {escape(', '.join(spec.inputs))} · {as_of}</p>"
                + (f"<table><tr>{head}</tr>{rows}</table>" if rows else "")
                + (f"<details><summary>who may see which fields, and why</summary><ul>{legal}</ul></details>"
                   if grants else "<p>No consumer is granted any field of this dataset.</p>")
            )
        return _page("Dataset catalog", "<p>Columns of each dataset's current published contract; a tick means"
                     " that consumer may receive the field for that purpose (anything unticked is denied).</p>"
                     + "".join(parts), user)

    return app

