"""Validate OpenLineage events against the official JSON schema (core spec plus one file per facet).

No package on PyPI, npm or Debian ships the spec files, and the network is not reachable from the
tests, so the spec is read from a directory: ``$OPENLINEAGE_SPEC_DIR``, else ``tests/openlineage_spec/``
(holding ``OpenLineage.json`` and ``facets/<Name>.json`` as in the OpenLineage repository's ``spec/``).

Every ``$ref`` is resolved through a ``referencing`` registry that maps a spec URL to the local file of
the same name: the client stamps each facet with the spec version it was generated from
(``…/facets/1-0-1/NominalTimeRunFacet.json``) and facet files point at older core versions, while one
directory holds one version of each file. Every facet must have its schema file: a facet without one
fails instead of passing unchecked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urldefrag, urlparse

DEFAULT_DIR = Path(__file__).parent / "openlineage_spec"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def spec_dir() -> Path | None:
    configured = os.environ.get("OPENLINEAGE_SPEC_DIR")
    for d in ([Path(configured)] if configured else []) + [DEFAULT_DIR]:
        if (d / "OpenLineage.json").is_file():
            return d
    return None


class Spec:
    def __init__(self, root: Path) -> None:
        from referencing import Registry, Resource
        from referencing.exceptions import NoSuchResource
        from referencing.jsonschema import DRAFT202012

        self.files = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in root.rglob("*.json")}

        def retrieve(uri: str) -> Resource:
            name = PurePosixPath(urlparse(uri).path).name
            if name not in self.files:
                raise NoSuchResource(ref=uri)
            return Resource.from_contents(self.files[name], default_specification=DRAFT202012)

        self.registry = Registry(retrieve=retrieve)

    def _validator(self, ref: str) -> Any:
        from jsonschema import Draft202012Validator

        return Draft202012Validator({"$ref": ref}, registry=self.registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)

    def facets(self, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        groups = [("run", event["run"].get("facets", {})), ("job", event["job"].get("facets", {}))]
        for kind in ("inputs", "outputs"):
            for d in event.get(kind, []):
                for key in ("facets", "inputFacets", "outputFacets"):
                    groups.append((f"{kind}:{d.get('name')}:{key}", d.get(key, {})))
        return [(f"{where}.{name}", facet) for where, group in groups for name, facet in group.items()]

    def errors(self, event: dict[str, Any]) -> list[str]:
        """Every violation of the run event schema and of each facet's own schema, as readable lines."""
        out = [f"event: {e.message} at {list(e.absolute_path)}"
               for e in self._validator(event.get("schemaURL") or RUN_EVENT).iter_errors(event)]
        for where, facet in self.facets(event):
            url = facet.get("_schemaURL", "")
            uri, fragment = urldefrag(url)
            if PurePosixPath(urlparse(uri).path).name not in self.files:
                out.append(f"{where}: no schema file for {url!r} in the spec directory")
                continue
            out += [f"{where}: {e.message} at {list(e.absolute_path)}"
                    for e in self._validator(url).iter_errors(facet)]
        return out
