"""`aronet registry keygen | sign`: the keys that sign registries, and the detached
signature (registry.json.sig) a signer writes for a registry (aronet.trust)."""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING

from ..errors import InputError, Problem
from .common import write_file
from .keys import new_key

if TYPE_CHECKING:
    from ..load import Signed
    from ..trust import Revocation

DEFAULT_EXPIRY = 30 * 86400
_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def keygen(args) -> int:
    from ..trust import compact, fingerprint

    key = new_key(args.path, args.force)
    print(compact(key))
    print(fingerprint(key))
    return 0


def when(text: str, now: int, option: str) -> int:
    """A time: 2030-01-01T00:00:00Z, or a duration from now (90d, 12h, 30m, 2w)."""
    from ..trust.statement import parse_time

    m = _DURATION.fullmatch(text)
    if m:
        return now + int(m.group(1)) * _UNIT[m.group(2)]
    try:
        return parse_time(text)
    except ValueError:
        raise InputError(Problem("aronet registry sign", option, f"{text!r} is neither a time like "
                                 "2030-01-01T00:00:00Z nor a duration like 90d, 12h or 30m")) from None


def signer_keys(paths: list[str]) -> list:
    from .. import keys

    out, problems = [], []
    for path in paths:
        try:
            out.append(keys.parse_private(keys.read_private(path, os.getcwd())))
        except keys.KeyProblem as e:
            problems.append(Problem(path, "$", str(e)))
    if problems:
        raise InputError(problems)
    return out


def _revocations(specs: list[str], option: str, node: bool) -> list[Revocation]:
    from .. import keys
    from ..trust import Revocation, fingerprint, parse_signer_key
    from ..trust.signers import is_fingerprint

    out, problems = [], []
    for spec in specs:
        subject, sep, reason = spec.partition("=")
        if not sep or not reason.strip():
            problems.append(Problem("aronet registry sign", option, f"{spec!r}: give SUBJECT=REASON"))
            continue
        if node:
            org, slash, cn = subject.partition("/")
            name = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
            if not slash or not re.fullmatch(name, org) or not re.fullmatch(name, cn):
                problems.append(Problem("aronet registry sign", option, f"{subject!r} is no "
                                        "ORGANIZATION/COMMON_NAME"))
                continue
        elif not is_fingerprint(subject):
            try:
                subject = fingerprint(parse_signer_key(subject))
            except keys.KeyProblem:
                problems.append(Problem("aronet registry sign", option, f"{subject!r} is neither a "
                                        "fingerprint (sha256:HEX) nor a public key (ed25519:BASE64)"))
                continue
        out.append(Revocation(subject, reason.strip()))
    if problems:
        raise InputError(problems)
    return out


def _earlier(signed: Signed):
    """The statement already in the .sig (None if there is none)."""
    from ..trust import decode_envelope

    if signed.sig_text is None:
        return None
    return decode_envelope(signed.sig_text, signed.sig_file)


def sign_registry(args) -> int:
    from ..load import build_registry, parse_json, read_signed
    from ..trust import Statement, encode_statement, envelope_text, sign
    from ..trust.statement import registry_hash

    signed = read_signed(args.registry, args.output)
    build_registry(parse_json(signed.text, signed.file), signed.file)  # never sign a bad registry
    private = signer_keys(args.key)
    earlier = _earlier(signed)
    if args.cosign:
        if earlier is None:
            raise InputError(Problem(signed.sig_file, "$", "--cosign adds a signature to an existing "
                                     ".sig, and there is none"))
        statement, text, signatures = earlier
        if statement.registry_sha256 != registry_hash(signed.data):
            raise InputError(Problem(signed.file, "$", "is not the registry the statement in "
                                     f"{signed.sig_file} signs; sign it anew instead of --cosign"))
        write_file(signed.sig_file, envelope_text(text, sign(text, private, signatures)))
        print(f"{signed.sig_file}: {len(private)} signature(s) added to serial {statement.serial}")
        return 0
    now = int(time.time()) if args.at is None else when(args.at, 0, "--at")
    before = earlier[0] if earlier else None
    mesh = args.mesh or (before.mesh if before else None)
    if not mesh:
        raise InputError(Problem("aronet registry sign", "--mesh", "needed: the mesh's name (taken "
                                 "from the existing .sig when there is one)"))
    serial = args.serial if args.serial is not None else (before.serial + 1 if before else 1)
    keys_revoked = {r.subject: r for r in (before.revoked_keys if before else ())}
    nodes_revoked = {r.subject: r for r in (before.revoked_nodes if before else ())}
    for r in _revocations(args.revoke_key, "--revoke-key", node=False):
        keys_revoked[r.subject] = r
    for r in _revocations(args.revoke_node, "--revoke-node", node=True):
        nodes_revoked[r.subject] = r
    for name in args.unrevoke_node:
        if nodes_revoked.pop(name, None) is None:
            raise InputError(Problem("aronet registry sign", "--unrevoke-node",
                                     f"{name!r} is not revoked in {signed.sig_file}"))
    expires = when(args.expires, now, "--expires") if args.expires else now + DEFAULT_EXPIRY
    if expires <= now:
        raise InputError(Problem("aronet registry sign", "--expires", "must be after now"))
    statement = Statement(mesh, serial, now, expires, registry_hash(signed.data),
                          tuple(sorted(keys_revoked.values())), tuple(sorted(nodes_revoked.values())))
    text = encode_statement(statement)
    write_file(signed.sig_file, envelope_text(text, sign(text, private)))
    print(f"{signed.sig_file}: serial {serial} of mesh {mesh}, expires "
          f"{statement.to_json()['expires_at']}, {len(keys_revoked)} key(s) and {len(nodes_revoked)} "
          f"node(s) revoked, {len(private)} signature(s)")
    return 0


def add(reg) -> None:
    k = reg.add_parser("keygen", help="write a new registry-signing key (mode 0600); print its public "
                                      "key (for registry.trusted_keys) and fingerprint")
    k.add_argument("path")
    k.add_argument("--force", action="store_true", help="overwrite an existing file")
    k.set_defaults(func=keygen)
    s = reg.add_parser("sign", help="write REGISTRY.sig: the signed statement about this registry")
    s.add_argument("registry")
    s.add_argument("-k", "--key", action="append", required=True, help="a signing key (repeat for k of n)")
    s.add_argument("-o", "--output", help="the .sig to write (default REGISTRY.sig)")
    s.add_argument("--mesh", help="the mesh's name (default: the existing .sig's)")
    s.add_argument("--serial", type=int, help="default: the existing .sig's serial + 1, or 1")
    s.add_argument("--expires", help="a time (2030-01-01T00:00:00Z) or a duration (90d, 12h); default 30d")
    s.add_argument("--revoke-node", action="append", default=[], metavar="ORG/CN=REASON")
    s.add_argument("--revoke-key", action="append", default=[], metavar="FINGERPRINT=REASON",
                   help="an organization's or a signer's key, by fingerprint or ed25519:BASE64")
    s.add_argument("--unrevoke-node", action="append", default=[], metavar="ORG/CN",
                   help="drop a node revocation the existing .sig carries (key revocations stay)")
    s.add_argument("--cosign", action="store_true",
                   help="add signatures to the existing .sig's statement, changing nothing else")
    s.add_argument("--at", help="sign as of this time instead of now (for tests and rehearsals)")
    s.set_defaults(func=sign_registry)

