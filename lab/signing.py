"""A signed lab (issue 21): the lab's registry.json gets a detached registry.json.sig
made by a signer key of the lab's own (<dir>/keys/registry-signer.pem), and every
node's config.json a `registry` block that requires that signature. Then a lab
serves as a rehearsal of the signed path: loads, rollbacks, revocations (revoke.py).

Made with aronet.trust, the same code the agents verify with."""

from __future__ import annotations

import json
import os
import time

from aronet import keys
from aronet.load import read_signed
from aronet.trust import (
    Revocation,
    Statement,
    compact,
    decode_envelope,
    encode_statement,
    envelope_text,
    sign,
)
from aronet.trust.statement import registry_hash

LAB_EXPIRY = 7 * 86400  # a lab lives hours; a week leaves room for a slow guest clock


def signer_file(directory: str) -> str:
    return os.path.join(directory, "keys", "registry-signer.pem")


def registry_file(directory: str) -> str:
    return os.path.join(directory, "registry.json")


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def sign_lab(directory: str, mesh: str, config_files: list[str]) -> str:
    """Make the signer key, require its signature in every config, and sign the
    registry (serial 1). Returns the .sig's path."""
    key = keys.generate()
    keys.write_private(signer_file(directory), key, force=True)
    for path in config_files:
        with open(path) as f:
            doc = json.load(f)
        doc["registry"] = {"signature": "required", "mesh": mesh, "trusted_keys": [compact(key)]}
        _write(path, json.dumps(doc, indent=2) + "\n")
    return resign(directory, mesh=mesh, serial=1)


def resign(directory: str, *, mesh: str | None = None, serial: int | None = None,
           revoke_nodes: tuple[tuple[str, str, str], ...] = (), expires_in: float = LAB_EXPIRY,
           now: float | None = None) -> str:
    """Sign the lab's registry.json anew: by default the next serial, the same mesh and
    the revocations the current .sig carries, plus revoke_nodes ((org, cn, reason))."""
    signed = read_signed(registry_file(directory))
    before = decode_envelope(signed.sig_text, signed.sig_file)[0] if signed.sig_text else None
    key = keys.parse_private(keys.read_private(signer_file(directory), directory))
    now = int(time.time() if now is None else now)
    nodes = {r.subject: r for r in (before.revoked_nodes if before else ())}
    for org, cn, reason in revoke_nodes:
        nodes[f"{org}/{cn}"] = Revocation(f"{org}/{cn}", reason)
    statement = Statement(
        mesh=mesh or before.mesh, serial=serial or (before.serial + 1 if before else 1),
        issued_at=now, expires_at=now + int(expires_in), registry_sha256=registry_hash(signed.data),
        revoked_keys=before.revoked_keys if before else (), revoked_nodes=tuple(sorted(nodes.values())))
    text = encode_statement(statement)
    _write(signed.sig_file, envelope_text(text, sign(text, [key])))
    return signed.sig_file
