"""The hot path's Ed25519 primitive and key lookup give exactly what the slow, obvious way gives."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa

from zerodoc.api import signing
from zerodoc.api.index import KEY_BYTES, Snapshot
from zerodoc.api.signing import ed25519_signer, load_or_create_keys, verify_evidence


def test_the_fast_signer_gives_cryptographys_exact_signatures(tmp_path):
    keys = load_or_create_keys(tmp_path)
    private = keys.active.private_key
    sign = ed25519_signer(private)
    for n in (0, 1, 63, 64, 65, 600, 4096):
        message = os.urandom(n)
        assert sign(message) == private.sign(message)  # Ed25519 is deterministic


def test_libsodium_is_used_only_when_present_and_can_be_switched_off(tmp_path, monkeypatch):
    keys = load_or_create_keys(tmp_path)
    private = keys.active.private_key
    if signing._libsodium():
        assert ed25519_signer(private) != private.sign  # our wrapper, not the bound method
    monkeypatch.setattr(signing, "_SODIUM", None)
    monkeypatch.setenv("ZERODOC_ED25519", "cryptography")
    assert ed25519_signer(private) == private.sign
    monkeypatch.setattr(signing, "_SODIUM", False)  # no libsodium on the system
    monkeypatch.delenv("ZERODOC_ED25519")
    assert ed25519_signer(private) == private.sign


def test_signed_answers_assembled_by_hand_are_the_json_of_the_parts(tmp_path):
    keys = load_or_create_keys(tmp_path)
    evidence = {"status": "ok", "fields": {"sigungu_name": "강남구", "household_size": 3}}
    signed = signing.canonical_bytes(evidence)
    payload = b"".join(
        (b'{"status":"ok"', b',"evidence":', signed, b',"signature":"', keys.sign_bytes(signed).encode(), b'",')
        + (keys.kid_tail,)
    )
    answer = json.loads(payload)
    assert answer == {"status": "ok", "evidence": evidence, "signature": keys.sign(evidence), "kid": keys.kid}
    assert verify_evidence(answer, keys.jwks())


def _snapshot(keys: list[bytes], quarantined: list[bytes] = ()) -> Snapshot:
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    arr = np.array([keys[i] for i in order], dtype=f"S{KEY_BYTES}")
    table = pa.table({"n": pa.array(order, pa.int64())})
    q = np.array(sorted(quarantined), dtype=f"S{KEY_BYTES}")
    return Snapshot("d", "v", "2025-06-30", [], arr, table, quarantined=q)


def test_lookup_finds_every_key_including_ones_ending_in_nul_bytes_and_nothing_else():
    rng = np.random.default_rng(7)
    keys = [bytes(rng.integers(0, 256, KEY_BYTES, dtype=np.uint8)) for _ in range(200)]
    keys += [b"\x01" * 31 + b"\0", b"\x02" * 30 + b"\0\0", b"\0" * KEY_BYTES]  # numpy strips trailing NULs
    snap = _snapshot(keys, quarantined=[keys[3], keys[-1]])
    for i, k in enumerate(keys):
        assert snap.lookup(k.hex()) == {"n": i}
    assert snap.lookup((b"\x01" * 31 + b"\x02").hex()) is None  # shares a stripped prefix, is not a key
    assert snap.lookup(b"\xff".hex() * KEY_BYTES) is None  # past the end
    assert snap.lookup("zz" * KEY_BYTES) is None and snap.lookup("ab") is None  # not hex / not 32 bytes
    assert snap.is_quarantined(keys[3].hex()) and snap.is_quarantined(keys[-1].hex())
    assert not snap.is_quarantined(keys[4].hex())
    assert not _snapshot(keys).is_quarantined(keys[3].hex())


def test_lookup_over_a_strided_key_array():
    keys = sorted(bytes([i]) * KEY_BYTES for i in range(1, 40))
    doubled = np.array([k for k in keys for _ in (0, 1)], dtype=f"S{KEY_BYTES}")
    strided = doubled[::2]  # a view with a stride of two items, not its own buffer
    assert not strided.flags.c_contiguous
    table = pa.table({"n": pa.array(range(len(keys)), pa.int64())})
    snap = Snapshot("d", "v", None, [], strided, table)
    assert [snap.lookup(k.hex()) for k in keys] == [{"n": i} for i in range(len(keys))]
