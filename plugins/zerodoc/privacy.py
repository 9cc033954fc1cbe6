"""Keyed pseudonyms for national identifiers: HMAC-SHA256, identical in Python and in DuckDB SQL."""

from __future__ import annotations

import hashlib
import hmac
import re

_NON_DIGITS = re.compile(r"\D")
_BLOCK = 64  # SHA-256 block size in bytes


def normalize_id(national_id: str) -> str:
    """Digits only, so '800101-1234567' and '8001011234567' pseudonymise alike."""
    return _NON_DIGITS.sub("", national_id)


def pseudonymize(national_id: str, key: bytes) -> str:
    """Hex HMAC-SHA256 of the normalised identifier under the configured key."""
    return hmac.new(key, normalize_id(national_id).encode(), hashlib.sha256).hexdigest()


def hmac_pads(key: bytes) -> tuple[str, str]:
    """Inner and outer HMAC pads (hex) so SQL engines without HMAC can compute the same value."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded).hex(), bytes(b ^ 0x5C for b in padded).hex()


def duckdb_macro_sql(key: bytes, name: str = "zd_pseudonym") -> str:
    """A TEMP macro computing pseudonymize() inside DuckDB, vectorised.

    The pads are as secret as the key: the macro is created on the connection at run
    time and never written into compiled SQL, manifests or logs.
    """
    ipad, opad = hmac_pads(key)
    return (
        f"CREATE OR REPLACE TEMP MACRO {name}(x) AS "
        f"CASE WHEN x IS NULL THEN NULL ELSE "
        f"sha256(unhex('{opad}') || unhex(sha256(unhex('{ipad}') || "
        f"encode(regexp_replace(x, '[^0-9]', '', 'g'))))) END"
    )


# Not touching other letters or digits, nor following a decimal point: 13 digits inside a hex
# pseudonym or in the fraction of a ratio are not an ID.
RRN_PATTERN = re.compile(r"(?<![0-9A-Za-z.])\d{6}-?[1-8]\d{6}(?![0-9A-Za-z])")


def contains_rrn(text: str) -> bool:
    """True when text holds something shaped like a resident registration number."""
    return bool(RRN_PATTERN.search(text))
