"""The signed statement and its envelope (registry.json.sig).

The envelope is JSON: {"aronet_registry_signature": 1, "statement": TEXT,
"signatures": [{"signer": FINGERPRINT, "signature": BASE64}]}. TEXT is the
statement's own JSON; each signature is Ed25519 over CONTEXT + TEXT in UTF-8.
CONTEXT separates the domain: no signature made for another purpose with the same
key (an IKE authentication, another tool's file) can pass as one of these.

Decoding checks the envelope and the statement against aronet/schemas/
signature.schema.json and reports every problem with its path; a path inside the
statement is written $.statement.serial. It checks no signature: verify.py does.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import schema
from ..errors import InputError, Problem, json_path
from .signers import fingerprint

CONTEXT = b"aronet registry statement v1\n"
FORMAT = 1
_SCHEMA_ID = "https://aronet.invalid/schemas/signature.schema.json"


@dataclass(frozen=True, order=True)
class Revocation:
    """A revoked key (subject: its fingerprint) or node (subject: "org/cn")."""

    subject: str
    reason: str


@dataclass(frozen=True)
class Statement:
    mesh: str
    serial: int
    issued_at: int  # seconds since the epoch, UTC, whole seconds
    expires_at: int
    registry_sha256: str  # hex
    revoked_keys: tuple[Revocation, ...] = ()
    revoked_nodes: tuple[Revocation, ...] = ()  # subject "organization/common_name"

    def to_json(self) -> dict:
        return {
            "mesh": self.mesh,
            "serial": self.serial,
            "issued_at": format_time(self.issued_at),
            "expires_at": format_time(self.expires_at),
            "registry_sha256": self.registry_sha256,
            "revoked_keys": [{"fingerprint": r.subject, "reason": r.reason} for r in self.revoked_keys],
            "revoked_nodes": [{"organization": r.subject.split("/", 1)[0],
                               "common_name": r.subject.split("/", 1)[1], "reason": r.reason}
                              for r in self.revoked_nodes],
        }


@dataclass(frozen=True)
class Signature:
    signer: str  # the signer key's fingerprint
    signature: bytes


def format_time(t: float) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def registry_hash(registry: bytes) -> str:
    return hashlib.sha256(registry).hexdigest()


def encode_statement(statement: Statement) -> str:
    """The statement's text, as it is signed and carried (any text would do: the
    bytes are signed as they are; this one is stable and readable)."""
    return json.dumps(statement.to_json(), indent=2, sort_keys=True) + "\n"


def sign(text: str, private_keys: list[Ed25519PrivateKey], earlier: tuple[Signature, ...] = ()
         ) -> tuple[Signature, ...]:
    """earlier's signatures (of the same text) and one by each key, once per signer."""
    out = {s.signer: s for s in earlier}
    for key in private_keys:
        out[fingerprint(key)] = Signature(fingerprint(key), key.sign(CONTEXT + text.encode()))
    return tuple(out.values())


def envelope_text(text: str, signatures: tuple[Signature, ...]) -> str:
    doc = {"aronet_registry_signature": FORMAT, "statement": text,
           "signatures": [{"signer": s.signer, "signature": base64.b64encode(s.signature).decode()}
                          for s in signatures]}
    return json.dumps(doc, indent=2) + "\n"


@cache
def _validators() -> tuple[schema.Validator, schema.Validator]:
    files = resources.files("aronet").joinpath("schemas")
    sig = schema.read(files.joinpath("signature.schema.json"))
    config = schema.read(files.joinpath("config.schema.json"))
    return (schema.strict_validator(sig, references=[config]),
            schema.strict_validator({"$ref": f"{_SCHEMA_ID}#/$defs/statement"},
                                    references=[sig, config]))


def _strict_object(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def decode_envelope(envelope: str, file: str) -> tuple[Statement, str, tuple[Signature, ...]]:
    """(statement, its text, signatures) of an envelope's text; InputError with every
    problem of the envelope, then of the statement."""
    envelope_check, statement_check = _validators()
    try:
        doc = json.loads(envelope, object_pairs_hook=_strict_object)
    except json.JSONDecodeError as e:
        raise InputError(Problem(file, f"line {e.lineno}, column {e.colno}",
                                 f"invalid JSON: {e.msg}")) from None
    except (ValueError, RecursionError) as e:
        raise InputError(Problem(file, "$", f"invalid JSON: {e}")) from None
    problems = schema.problems(envelope_check, doc, file)
    if problems:
        raise InputError(problems)
    text = doc["statement"]
    try:
        raw = json.loads(text, object_pairs_hook=_strict_object)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise InputError(Problem(file, "$.statement", f"the statement is not strict JSON: {e}")) from None
    problems = [Problem(p.file, "$.statement" + p.path[1:], p.message)
                for p in schema.problems(statement_check, raw, file)]
    if problems:
        raise InputError(problems)
    times = {}
    for name in ("issued_at", "expires_at"):
        try:
            times[name] = parse_time(raw[name])
        except ValueError as e:
            problems.append(Problem(file, f"$.statement.{name}", f"{raw[name]!r} is no time: {e}"))
    if problems:
        raise InputError(problems)
    issued, expires = times["issued_at"], times["expires_at"]
    if expires <= issued:
        raise InputError(Problem(file, "$.statement.expires_at", f"{raw['expires_at']} is not after "
                                 f"issued_at {raw['issued_at']}"))
    signatures = tuple(Signature(s["signer"], base64.b64decode(s["signature"]))
                       for s in doc["signatures"])
    nodes = tuple(Revocation(f"{r['organization']}/{r['common_name']}", r["reason"])
                  for r in raw["revoked_nodes"])
    statement = Statement(
        mesh=raw["mesh"], serial=raw["serial"], issued_at=issued, expires_at=expires,
        registry_sha256=raw["registry_sha256"],
        revoked_keys=tuple(Revocation(r["fingerprint"], r["reason"]) for r in raw["revoked_keys"]),
        revoked_nodes=nodes)
    return statement, text, signatures


def statement_path(*parts) -> str:
    return "$.statement" + json_path(parts)[1:]
