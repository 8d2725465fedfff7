"""Signer keys: how a trusted key is written in config.json and named in a .sig.

A key is written either as PEM (what `aronet key public` prints) or in the compact
form "ed25519:" + base64 of its 32 raw bytes, which fits on one line of JSON. It is
named by its fingerprint, "sha256:" + hex of the sha256 of the raw bytes: the same
for the registry's organization keys, so one word revokes either kind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import keys

COMPACT_PREFIX = "ed25519:"
FINGERPRINT_PREFIX = "sha256:"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def raw_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(*_RAW)


def compact(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    return COMPACT_PREFIX + base64.b64encode(raw_bytes(key)).decode()


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | str) -> str:
    """Of a key object, or of a key's text (PEM or compact; keys.KeyProblem if neither)."""
    if isinstance(key, str):
        key = parse_signer_key(key)
    return FINGERPRINT_PREFIX + hashlib.sha256(raw_bytes(key)).hexdigest()


def parse_signer_key(text: str) -> Ed25519PublicKey:
    """A public key in PEM or the compact form; keys.KeyProblem with the reason."""
    if text.startswith(COMPACT_PREFIX):
        try:
            raw = base64.b64decode(text[len(COMPACT_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise keys.KeyProblem("not base64 after 'ed25519:'") from None
        if len(raw) != 32:
            raise keys.KeyProblem(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        return Ed25519PublicKey.from_public_bytes(raw)
    if text.lstrip().startswith(keys.PEM_MARK):
        return keys.parse_public(text.strip() + "\n")
    raise keys.KeyProblem("not a public key: give 'ed25519:BASE64' (as `aronet registry keygen` "
                          "prints it) or a PEM public key")


def is_fingerprint(text: str) -> bool:
    digits = text[len(FINGERPRINT_PREFIX):]
    return (text.startswith(FINGERPRINT_PREFIX) and len(digits) == 64
            and all(c in "0123456789abcdef" for c in digits))
