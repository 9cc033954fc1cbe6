"""Access policy: consumer x dataset x purpose (with its legal basis) -> allowed fields.

Loaded from a version-controlled YAML file and validated at start; anything not granted
there is denied.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zerodoc.api.consumers import NAME_PATTERN
from zerodoc.api.datasets import DATASET_COLUMNS, KEY_COLUMNS, NOT_GRANTABLE
from zerodoc.config import ConfigError, Settings

PURPOSE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{2,63}$")


class PolicyError(ConfigError):
    """The access policy file is invalid; the message names the file, the grant and the problem."""


@dataclass(frozen=True)
class Purpose:
    name: str
    legal_basis: str


@dataclass(frozen=True)
class Grant:
    consumer: str
    dataset: str
    purpose: Purpose
    fields: tuple[str, ...]
    max_age_days: int | None = None  # older published data -> needs_document, not evidence


@dataclass(frozen=True)
class AccessPolicy:
    path: Path
    purposes: dict[str, Purpose]
    grants: dict[tuple[str, str, str], Grant]

    def grant_for(self, consumer: str, dataset: str, purpose: str) -> Grant | None:
        return self.grants.get((consumer, dataset, purpose))

    def granted_columns(self, dataset: str) -> tuple[str, ...]:
        """Every field any grant can return from the dataset: all the API needs to keep in memory."""
        cols = {f for g in self.grants.values() if g.dataset == dataset for f in g.fields}
        return tuple(c for c in DATASET_COLUMNS[dataset] if c in cols)


def policy_path(cfg: Settings) -> Path:
    override = os.environ.get("ZERODOC_ACCESS_POLICY")
    return Path(override) if override else cfg.config_dir / "access_policy.yml"


def _fail(path: Path, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{path}: {where}: {problem}")


def _expect_keys(path: Path, where: str, obj: Any, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(obj, dict):
        raise _fail(path, where, "must be a mapping")
    missing = required - obj.keys()
    if missing:
        raise _fail(path, where, f"missing {sorted(missing)}")
    extra = obj.keys() - required - optional
    if extra:
        raise _fail(path, where, f"unknown keys {sorted(extra)}")


def parse_policy(doc: Any, path: Path) -> AccessPolicy:
    _expect_keys(path, "top level", doc, {"version", "purposes", "grants"})
    if doc["version"] != 1:
        raise _fail(path, "version", f"unsupported policy version {doc['version']!r} (expected 1)")

    purposes: dict[str, Purpose] = {}
    if not isinstance(doc["purposes"], dict) or not doc["purposes"]:
        raise _fail(path, "purposes", "must be a non-empty mapping of purpose -> {legal_basis}")
    for name, spec in doc["purposes"].items():
        where = f"purpose {name!r}"
        if not isinstance(name, str) or not PURPOSE_PATTERN.match(name):
            raise _fail(path, where, "purpose names are lowercase snake_case, 3-64 characters")
        _expect_keys(path, where, spec, {"legal_basis"}, {"description"})
        if not isinstance(spec["legal_basis"], str) or not spec["legal_basis"].strip():
            raise _fail(path, where, "legal_basis must be non-empty text citing the law that allows it")
        purposes[name] = Purpose(name, spec["legal_basis"].strip())

    grants: dict[tuple[str, str, str], Grant] = {}
    if not isinstance(doc["grants"], list):
        raise _fail(path, "grants", "must be a list")
    for i, spec in enumerate(doc["grants"], start=1):
        where = f"grant #{i}"
        _expect_keys(path, where, spec, {"consumer", "dataset", "purpose", "fields"}, frozenset({"max_age_days"}))
        consumer, dataset, purpose, fields = (spec[k] for k in ("consumer", "dataset", "purpose", "fields"))
        where = f"grant #{i} ({consumer} / {dataset} / {purpose})"
        if not isinstance(consumer, str) or not NAME_PATTERN.match(consumer):
            raise _fail(path, where, "consumer must be a consumer name (lowercase letters, digits, '-')")
        if dataset not in DATASET_COLUMNS:
            raise _fail(path, where, f"unknown dataset {dataset!r}; known: {sorted(DATASET_COLUMNS)}")
        if purpose not in purposes:
            raise _fail(path, where, f"unknown purpose {purpose!r}; declare it under 'purposes' first")
        if not isinstance(fields, list) or not fields:
            raise _fail(path, where, "fields must be a non-empty list")
        not_grantable = NOT_GRANTABLE | {KEY_COLUMNS.get(dataset)}
        for f in fields:
            if f not in DATASET_COLUMNS[dataset] or f in not_grantable:
                allowed = sorted(set(DATASET_COLUMNS[dataset]) - not_grantable)
                raise _fail(path, where, f"unknown field {f!r} for {dataset}; grantable: {allowed}")
        if len(set(fields)) != len(fields):
            raise _fail(path, where, "a field is listed twice")
        key = (consumer, dataset, purpose)
        if key in grants:
            raise _fail(path, where, "duplicate grant: this consumer, dataset and purpose are already granted")
        max_age = spec.get("max_age_days")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1):
            raise _fail(path, where, "max_age_days must be a positive whole number of days")
        grants[key] = Grant(consumer, dataset, purposes[purpose], tuple(fields), max_age)
    return AccessPolicy(path=path, purposes=purposes, grants=grants)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load keeps the last of two equal keys silently; a policy must not."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_policy(path: Path) -> AccessPolicy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: access policy file not found") from exc
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_policy(doc, Path(path))
