"""A registry you can trust: the detached, signed statement about a registry.json
and the checks a node runs before it accepts one (issue 21).

registry.json stays byte-identical to the format other implementations read; all
trust data is in a detached registry.json.sig, a JSON envelope holding the signed
statement as text (so its exact bytes are signed, and no canonical JSON is needed)
and Ed25519 signatures over CONTEXT + those bytes. The statement names the mesh,
a monotonic serial, issued_at and expires_at, the sha256 of the exact registry
bytes, and the revoked keys (by fingerprint) and nodes (by organization and common
name), each with a reason.

Pure: no I/O and no clock. Every check takes the time as an argument (the injectable
clock); the daemon passes time.time(), tests pass what they like. The files are read
by aronet.load (signed.py); the accepted serial is kept by the agent.

  signers    signer keys: the compact "ed25519:BASE64" form, PEM, fingerprints
  statement  Statement and Revocation; encode, sign, decode an envelope
  verify     TrustState (what was accepted before), Verdict, verify(), expiry()
  revoke     effective(): the registry the planner sees once revocations apply
"""

from __future__ import annotations

from .revoke import effective
from .signers import compact, fingerprint, parse_signer_key
from .statement import (
    CONTEXT,
    Revocation,
    Signature,
    Statement,
    decode_envelope,
    encode_statement,
    envelope_text,
    sign,
)
from .verify import TrustState, Verdict, expiry, verify

__all__ = [
    "CONTEXT",
    "Revocation",
    "Signature",
    "Statement",
    "TrustState",
    "Verdict",
    "compact",
    "decode_envelope",
    "effective",
    "encode_statement",
    "envelope_text",
    "expiry",
    "fingerprint",
    "parse_signer_key",
    "sign",
    "verify",
]
