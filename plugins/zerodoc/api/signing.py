"""Ed25519 signing keys for evidence, the JWKS that publishes them, and detached-JWS sign/verify.

The signature is a JWS compact serialization with a detached payload (RFC 7515 appendix F):
``<protected header>..<signature>``; the payload is the canonical JSON of the "evidence"
object (sorted keys, no spaces, UTF-8), which the receiver recomputes from the answer.

Signing builds that compact form itself around the key's Ed25519 primitive (the header is
encoded once per key): byte for byte what joserfc's ``serialize_compact`` produces, Ed25519
being deterministic, at a fraction of its per-call overhead. Verifying goes through joserfc.

The primitive is libsodium's when the system has it (``crypto_sign_detached``, ~20 us against
~34 us for cryptography's OpenSSL-backed ``sign`` on the bench machine); it is only used after
signing a probe message gave the very bytes cryptography gives, else cryptography signs.
ZERODOC_ED25519=cryptography forces the latter.
"""

from __future__ import annotations

import binascii
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from zerodoc.fsutil import write_json_atomic

# RFC 9864's fully-specified name for EdDSA over Ed25519; joserfc 1.8 warns on the polymorphic
# "EdDSA". Only this algorithm verifies: accepting a list an attacker can pick from buys nothing.
ALG = "Ed25519"
ACCEPTED_ALGS = ["Ed25519"]


log = logging.getLogger(__name__)
_SODIUM: Any = None  # the loaded library, False when unavailable; loaded on first use


def _libsodium() -> Any:
    global _SODIUM
    if _SODIUM is None:
        _SODIUM = False
        if os.environ.get("ZERODOC_ED25519", "").lower() != "cryptography":
            try:
                # PyDLL: the call keeps the GIL. A 20 us signature gains nothing from letting go of it
                # (both cores already run a worker each), and each release hands the GIL to the audit
                # writer thread and back: two context switches per answer.
                lib = ctypes.PyDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
                if lib.sodium_init() >= 0:
                    lib.crypto_sign_seed_keypair.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
                    lib.crypto_sign_detached.argtypes = [
                        ctypes.c_char_p,
                        ctypes.c_void_p,
                        ctypes.c_char_p,
                        ctypes.c_ulonglong,
                        ctypes.c_char_p,
                    ]
                    _SODIUM = lib
            except OSError:
                pass
    return _SODIUM


def ed25519_signer(private_key: Any) -> Callable[[bytes], bytes]:
    """sign(data) -> 64-byte Ed25519 signature for a cryptography private key; libsodium when it agrees."""
    lib = _libsodium()
    if not lib:
        return private_key.sign
    seed = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = ctypes.create_string_buffer(32)
    secret = ctypes.create_string_buffer(64)
    if lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
        return private_key.sign
    sign_detached = lib.crypto_sign_detached

    def sign(data: bytes) -> bytes:
        out = ctypes.create_string_buffer(64)
        sign_detached(out, None, data, len(data), secret)
        return out.raw

    probe = b"zerodoc ed25519 probe \x00\xff"
    public_raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if public.raw != public_raw or sign(probe) != private_key.sign(probe):
        log.warning("libsodium's Ed25519 disagrees with cryptography's; signing with cryptography")
        return private_key.sign
    return sign


def canonical_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> bytes:
    """base64.urlsafe_b64encode(data) without padding, in two C calls instead of four Python ones."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


@dataclass
class SigningKeys:
    """Key pairs under ``state/signing/``: ``keys.json`` (kids, dates) and ``<kid>.pem`` (0600).

    The newest key that is not retired signs; every key still listed (retired ones included)
    is published in the JWKS so answers signed before a rotation keep verifying. A key leaves
    the JWKS only when an operator deletes it from keys.json.
    """

    directory: Path
    active: OKPKey
    all_keys: list[OKPKey]
    _header_b64: bytes = field(init=False, repr=False)
    _sign: Callable[[bytes], bytes] = field(init=False, repr=False)
    kid_tail: bytes = field(init=False, repr=False)  # '"kid":"<kid>"}': how a signed answer ends

    def __post_init__(self) -> None:
        header = json.dumps({"alg": ALG, "kid": self.active.kid}, separators=(",", ":")).encode("ascii")
        self._header_b64 = b64url(header)
        self.kid_tail = b'"kid":' + json.dumps(self.active.kid, ensure_ascii=False).encode("utf-8") + b"}"
        self._sign = ed25519_signer(self.active.private_key)

    @property
    def kid(self) -> str:
        return self.active.kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "alg": ALG, "use": "sig"} for k in self.all_keys]}

    def sign(self, evidence: dict[str, Any]) -> str:
        return self.sign_bytes(canonical_bytes(evidence))

    def sign_bytes(self, payload: bytes) -> str:
        """Detached JWS over payload, which must be canonical_bytes(evidence)."""
        signature = self._sign(self._header_b64 + b"." + b64url(payload))
        return (self._header_b64 + b".." + b64url(signature)).decode("ascii")


def _new_key(directory: Path) -> dict[str, Any]:
    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    pem = key.as_pem(private=True)
    # O_EXCL + 0600 from the first byte: the private key is never readable by others, not even briefly.
    fd = os.open(directory / f"{key.kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return {"kid": key.kid, "created_at": _now(), "retired_at": None}


def _load(directory: Path, entries: list[dict[str, Any]]) -> SigningKeys:
    keys: list[OKPKey] = []
    active: OKPKey | None = None
    for e in entries:
        key = OKPKey.import_key((directory / f"{e['kid']}.pem").read_bytes(), parameters={"kid": e["kid"]})
        keys.append(key)
        if e.get("retired_at") is None:
            active = key  # entries are in creation order: the last unretired one signs
    if active is None:
        raise RuntimeError(f"{directory / 'keys.json'}: no active signing key; run a key rotation")
    return SigningKeys(directory=directory, active=active, all_keys=keys)


class _DirLock:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def load_or_create_keys(state_dir: Path) -> SigningKeys:
    """Load the signing keys, generating the first pair on first start (safe with several workers)."""
    directory = state_dir / "signing"
    with _DirLock(directory):
        index = directory / "keys.json"
        if index.exists():
            entries = json.loads(index.read_text())["keys"]
        else:
            entries = [_new_key(directory)]
            write_json_atomic(index, {"keys": entries})
        return _load(directory, entries)


def rotate_signing_key(state_dir: Path) -> str:
    """Retire the active key (it stays in the JWKS) and start signing with a new one; return its kid."""
    directory = state_dir / "signing"
    with _DirLock(directory):
        index = directory / "keys.json"
        entries = json.loads(index.read_text())["keys"] if index.exists() else []
        for e in entries:
            if e.get("retired_at") is None:
                e["retired_at"] = _now()
        new = _new_key(directory)
        entries.append(new)
        write_json_atomic(index, {"keys": entries})
        return new["kid"]


def verify_evidence(answer: dict[str, Any], jwks: dict[str, Any]) -> bool:
    """True when answer["signature"] is a valid detached JWS over answer["evidence"] by a key in jwks."""
    try:
        evidence = answer["evidence"]
        signature = answer["signature"]
        header_b64, payload_b64, _sig = signature.split(".")
        if payload_b64:  # must be detached: the signed bytes are the evidence we were given
            return False
        keys = KeySet.import_key_set(jwks)
        obj = jws.deserialize_compact(signature, keys, algorithms=ACCEPTED_ALGS, payload=canonical_bytes(evidence))
        kid = answer.get("kid")
        return kid is None or obj.headers().get("kid") == kid
    except (JoseError, KeyError, TypeError, ValueError, AttributeError):
        return False
