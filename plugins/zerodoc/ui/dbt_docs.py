"""dbt docs for the auditor section: generated after each dbt build, kept under $ZERODOC_HOME/reports/dbt_docs.

``dbt docs generate`` writes ``index.html`` (the whole docs site), ``manifest.json`` and
``catalog.json`` into dbt's target directory, which every build rewrites; the three files are copied
next to the validation reports so the pages keep showing the docs of the last successful build.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from zerodoc.config import Settings

log = logging.getLogger(__name__)

FILES = ("index.html", "manifest.json", "catalog.json")


def docs_dir(cfg: Settings) -> Path:
    return cfg.reports_dir / "dbt_docs"


def generate(ds: str, cfg: Settings | None = None) -> Path:
    """Run ``dbt docs generate`` for ``ds`` and publish its three files (each replaced atomically)."""
    from zerodoc.transform.runner import run_dbt, target_dir

    cfg = cfg or Settings.from_env()
    src, dest = target_dir(cfg), docs_dir(cfg)
    # After a build, manifest.json already holds every node it compiled: dbt then only builds the
    # catalog and leaves that manifest as it is (--no-compile), instead of compiling the project again
    # (~3 s at 10M persons, inside the task that holds the warehouse).
    compiled = ["--no-compile"] if (src / "manifest.json").exists() else []
    run_dbt(["docs", "generate", *compiled], ds=ds, cfg=cfg)
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, dest / name)
    return dest


def generate_quietly(ds: str, cfg: Settings | None = None) -> Path | None:
    """Docs are for reading, not a gate: a failure is logged with what to do, and publishing goes on."""
    try:
        return generate(ds, cfg)
    except Exception as exc:  # noqa: BLE001 - missing docs must not block publishing the datasets
        log.warning("dbt docs not generated for %s (%s); the auditor section keeps the previous docs. "
                    "Clear the publish_shared dbt_build task for %s to try again", ds, exc, ds)
        return None
