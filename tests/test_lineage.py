"""OpenLineage events for one full run (extract, validate, dbt, publish), written offline and checked."""

from __future__ import annotations

import copy
import uuid

import pytest

from zerodoc import lineage
from zerodoc.config import Settings

from .openlineage_spec import Spec, spec_dir

DS = "2026-11-20"
ENTITIES = ("mois.residents", "mois.households", "nts.income")
SUMMARY = {
    "extracted": 3000, "passed": 2957, "quarantined": 43,
    "checks": [
        {"id": "rrn_valid", "type": "expect_column_values_to_match_regex", "severity": "fail",
         "description": "valid RRN", "unexpected_count": 43},
        {"id": "name_not_null", "type": "expect_column_values_to_not_be_null", "severity": "warn",
         "description": "name present", "unexpected_count": 0},
    ],
}


@pytest.fixture()
def events(tmp_path, monkeypatch):
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    monkeypatch.delenv("OPENLINEAGE_URL", raising=False)
    monkeypatch.delenv("ZERODOC_LINEAGE", raising=False)
    for q in ENTITIES:
        with lineage.extract_run(q, DS):
            pass
        with lineage.validate_run(q, DS) as run:
            lineage.add_validation_results(run, SUMMARY)
    with lineage.dbt_run(DS, ENTITIES, ["residence_v1", "income_v1"]):
        pass
    for name in ("residence_v1", "income_v1"):
        with lineage.publish_run(name, name, DS) as run:
            lineage.add_published_version(run, f"{DS}.abcd", 10)
    with pytest.raises(RuntimeError), lineage.publish_run("household_v1", "household_v1", DS):
        raise RuntimeError("gate closed")
    return lineage.read_events(Settings(home=tmp_path))


def test_every_step_emits_start_then_complete_with_one_run_id(events):
    by_job: dict[str, list[dict]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e)
    assert len(by_job) == 3 + 3 + 1 + 3
    for job, evs in by_job.items():
        states = [e["eventType"] for e in evs]
        assert states == (["START", "FAIL"] if job == "publish.household_v1" else ["START", "COMPLETE"]), job
        assert len({e["run"]["runId"] for e in evs}) == 1
        uuid.UUID(evs[0]["run"]["runId"])


def test_datasets_are_named_by_zone_in_the_zerodoc_namespace(events):
    validate = next(e for e in events if e["job"]["name"] == "validate.mois.residents" and e["eventType"] == "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in validate["inputs"]] == [("zerodoc", "raw.mois.residents")]
    assert [d["name"] for d in validate["outputs"]] == ["validated.mois.residents", "quarantine.mois.residents"]
    dbt = next(e for e in events if e["job"]["name"] == "dbt.build")
    assert {d["name"] for d in dbt["inputs"]} == {f"validated.{q}" for q in ENTITIES}
    pub = next(e for e in events if e["job"]["name"] == "publish.residence_v1" and e["eventType"] == "COMPLETE")
    assert pub["outputs"][0]["name"] == "published.residence_v1"
    assert pub["outputs"][0]["facets"]["version"]["datasetVersion"] == f"{DS}.abcd"


def test_validation_results_travel_as_data_quality_facets(events):
    validate = next(e for e in events if e["job"]["name"] == "validate.nts.income" and e["eventType"] == "COMPLETE")
    facets = validate["inputs"][0]["inputFacets"]
    got = {(a["assertion"], a["success"], a["actual"]) for a in facets["dataQualityAssertions"]["assertions"]}
    assert got == {("rrn_valid", False, "43"), ("name_not_null", True, "0")}
    assert facets["dataQualityMetrics"]["rowCount"] == 3000
    rows = {o["name"].split(".")[0]: o["outputFacets"]["outputStatistics"]["rowCount"] for o in validate["outputs"]}
    assert rows == {"validated": 2957, "quarantine": 43}


def test_events_follow_the_openlineage_run_event_shape(events):
    """The fields the spec requires, on every event and facet (the installed client's schema URLs)."""
    for e in events:
        assert e["schemaURL"].startswith("https://openlineage.io/spec/") and "#/$defs/RunEvent" in e["schemaURL"]
        assert e["producer"] == lineage.PRODUCER and e["eventTime"].endswith("Z")
        assert e["eventType"] in {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
        assert e["job"]["namespace"] == "zerodoc"
        facet_groups = [e["run"]["facets"], e["job"]["facets"]]
        for d in e["inputs"] + e["outputs"]:
            facet_groups += [d.get("facets", {}), d.get("inputFacets", {}), d.get("outputFacets", {})]
        for group in facet_groups:
            for facet in group.values():
                assert facet["_producer"] and facet["_schemaURL"].startswith("https://openlineage.io/spec/facets/")


@pytest.fixture()
def spec():
    root = spec_dir()
    if root is None:
        pytest.skip("no OpenLineage spec files: set OPENLINEAGE_SPEC_DIR to a copy of the OpenLineage repository's "
                    "spec/ directory (no PyPI, npm or Debian package ships it); see tests/openlineage_spec.py")
    return Spec(root)


def test_every_event_of_a_full_run_validates_against_the_openlineage_schema(events, spec):
    jobs = {e["job"]["name"].split(".")[0] for e in events}
    assert jobs == {"extract", "validate", "dbt", "publish"}
    facet_names = {where.rsplit(".", 1)[1] for e in events for where, _ in spec.facets(e)}
    assert facet_names == {"nominalTime", "errorMessage", "jobType", "dataQualityAssertions", "dataQualityMetrics",
                           "outputStatistics", "version"}
    for e in events:
        assert spec.errors(e) == [], (e["job"]["name"], e["eventType"])


MALFORMED = {
    "job without a name": lambda e: e["job"].pop("name"),
    "unknown event type": lambda e: e.__setitem__("eventType", "DONE"),
    "run id not a UUID": lambda e: e["run"].__setitem__("runId", "run-1"),
    "assertion without success": lambda e: e["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"][0]
    .pop("success"),
    "row count as text": lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].__setitem__("rowCount", "43"),
    "facet without producer": lambda e: e["job"]["facets"]["jobType"].pop("_producer"),
    "facet with an unknown schema": lambda e: e["run"]["facets"]["nominalTime"].__setitem__(
        "_schemaURL", "https://openlineage.io/spec/facets/1-0-0/MadeUpRunFacet.json#/$defs/MadeUpRunFacet"),
}


@pytest.mark.parametrize("defect", MALFORMED)
def test_a_malformed_event_fails_the_schema(events, spec, defect):
    good = next(e for e in events if e["job"]["name"] == "validate.mois.residents" and e["eventType"] == "COMPLETE")
    assert spec.errors(good) == []
    bad = copy.deepcopy(good)
    MALFORMED[defect](bad)
    assert spec.errors(bad), defect


def test_lineage_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    monkeypatch.setenv("ZERODOC_LINEAGE", "off")
    with lineage.extract_run("mois.residents", DS):
        pass
    assert not lineage.events_path(Settings(home=tmp_path)).exists()
