"""Whether a node accepts a registry: the checks of the signed statement, in order.

verify() returns a Verdict: accepted or not, every reason it was refused and every
remark on what was accepted, each an aronet.errors.Problem naming the file (the
registry or its .sig), the path and the reason. It refuses, when the policy
checks signatures (config.json's `registry` block):

  - no .sig when one is required (or, with "optional", once a signed registry
    was accepted: going back to unsigned would undo rollback protection);
  - a .sig that is no valid envelope or statement;
  - another mesh's statement;
  - a registry whose sha256 is not the statement's;
  - fewer valid signatures by distinct trusted, unrevoked keys than the threshold;
  - a statement issued in the future or expired (beyond the allowed clock skew);
  - a rollback: a serial below the highest accepted one, or the same serial with
    another statement.

`now` is the clock: seconds since the epoch, given by the caller.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature

from .. import keys
from ..errors import InputError, Problem
from ..model import RegistryPolicy
from .signers import fingerprint, parse_signer_key
from .statement import CONTEXT, Revocation, Statement, decode_envelope, format_time, registry_hash


@dataclass(frozen=True)
class TrustState:
    """What this node accepted before; the agent keeps it in its state directory.
    revoked_keys is every key any accepted statement revoked: a revocation of a key
    outlives the statements that carried it."""

    serial: int = 0  # 0: no signed registry accepted yet
    registry_sha256: str = ""
    statement_sha256: str = ""
    revoked_keys: tuple[Revocation, ...] = ()

    def to_json(self) -> dict:
        return {"serial": self.serial, "registry_sha256": self.registry_sha256,
                "statement_sha256": self.statement_sha256,
                "revoked_keys": [{"fingerprint": r.subject, "reason": r.reason}
                                 for r in self.revoked_keys]}

    @classmethod
    def from_json(cls, doc) -> TrustState:
        """ValueError when doc is not one."""
        try:
            serial = doc["serial"]
            if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
                raise ValueError(f"serial {serial!r} is no count")
            revoked = tuple(Revocation(str(r["fingerprint"]), str(r["reason"]))
                            for r in doc.get("revoked_keys", ()))
            return cls(serial, str(doc["registry_sha256"]), str(doc["statement_sha256"]), revoked)
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"not a trust state: {e!r}") from None


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    refused: tuple[Problem, ...] = ()  # why not (empty when accepted)
    notes: tuple[Problem, ...] = ()  # remarks on what was accepted or checked
    statement: Statement | None = None  # None: unsigned
    statement_sha256: str = ""
    signers: tuple[str, ...] = ()  # fingerprints of the valid trusted signatures
    expired: bool = False  # (current=True only) accepted, but past expires_at
    state: TrustState = field(default_factory=TrustState)  # to keep once this is accepted

    @property
    def revoked_keys(self) -> tuple[Revocation, ...]:
        return self.state.revoked_keys

    @property
    def revoked_nodes(self) -> tuple[Revocation, ...]:
        return self.statement.revoked_nodes if self.statement else ()

    def raise_refused(self) -> None:
        if not self.accepted:
            raise InputError(list(self.refused))


def _refuse(*problems: Problem, notes=()) -> Verdict:
    return Verdict(False, refused=tuple(problems), notes=tuple(notes))


def trusted_keys(policy: RegistryPolicy) -> dict[str, object]:
    """fingerprint -> public key; keys that do not parse are left out (the config's
    loader refuses them)."""
    out = {}
    for text in policy.trusted_keys:
        try:
            key = parse_signer_key(text)
        except keys.KeyProblem:
            continue
        out[fingerprint(key)] = key
    return out


def verify(registry: bytes, envelope: str | None, policy: RegistryPolicy, state: TrustState,
           now: float, *, registry_file: str = "registry.json", sig_file: str | None = None,
           current: bool = False) -> Verdict:
    """Whether to accept registry (its exact bytes) with envelope (the .sig's text, or
    None when there is none). current: the registry already in force is re-checked
    (at start, or as time passes): it may equal the state, and an expired one is
    accepted with expired=True (what happens then is the policy's on_expiry)."""
    sig_file = sig_file or registry_file + ".sig"
    if not policy.checks:
        return Verdict(True, notes=(Problem(registry_file, "$", "not checked: signatures are off "
                                            "(config.json has no registry block, or signature off)"),),
                       state=state)
    if envelope is None:
        if policy.signature == "required":
            return _refuse(Problem(sig_file, "$", "missing: this node requires a signed registry "
                                   "(registry.signature is \"required\")"))
        if state.serial:
            return _refuse(Problem(sig_file, "$", f"missing: a signed registry (serial {state.serial}) "
                                   "was accepted before, and an unsigned one would undo the rollback "
                                   "protection it gave"))
        return Verdict(True, notes=(Problem(sig_file, "$", "missing; accepted unsigned (registry."
                                            "signature is \"optional\")"),), state=state)
    try:
        statement, text, signatures = decode_envelope(envelope, sig_file)
    except InputError as e:
        return _refuse(*e.problems)
    problems: list[Problem] = []
    notes: list[Problem] = []
    digest = hashlib.sha256(text.encode()).hexdigest()
    if statement.mesh != policy.mesh:
        problems.append(Problem(sig_file, "$.statement.mesh", f"{statement.mesh!r} is another mesh; "
                                f"this node is in {policy.mesh!r}"))
    actual = registry_hash(registry)
    if actual != statement.registry_sha256:
        problems.append(Problem(registry_file, "$", f"its sha256 {actual} is not the "
                                f"{statement.registry_sha256} the statement signs: the registry "
                                "or its .sig was changed"))
    revoked = {r.subject: r for r in (*state.revoked_keys, *statement.revoked_keys)}
    signers = _signers(statement, text, signatures, policy, revoked, sig_file, notes)
    if len(signers) < policy.threshold:
        problems += [n for n in notes if n.path.startswith("$.signatures")]  # why each did not count
        notes = [n for n in notes if not n.path.startswith("$.signatures")]
        problems.append(Problem(sig_file, "$.signatures", f"{len(signers)} valid signature"
                                f"{'' if len(signers) == 1 else 's'} by trusted keys; this node "
                                f"requires {policy.threshold}"))
    skew = policy.clock_skew
    if statement.issued_at > now + skew:
        problems.append(Problem(sig_file, "$.statement.issued_at", f"{format_time(statement.issued_at)}"
                                f" is in the future (now {format_time(now)}, allowed skew {skew:g} s): "
                                "not yet valid"))
    expired = statement.expires_at + skew < now
    if expired:
        where = Problem(sig_file, "$.statement.expires_at", f"expired at {format_time(statement.expires_at)}"
                        f" (now {format_time(now)}, allowed skew {skew:g} s)")
        (notes if current else problems).append(where)
    if statement.serial < state.serial:
        problems.append(Problem(sig_file, "$.statement.serial", f"{statement.serial} is below "
                                f"{state.serial}, the highest serial this node accepted: a rollback"))
    elif statement.serial == state.serial and digest != state.statement_sha256:
        what = ("another registry" if statement.registry_sha256 != state.registry_sha256
                else "another statement")
        problems.append(Problem(sig_file, "$.statement.serial", f"{statement.serial} is the serial "
                                f"this node accepted already, with {what}: a new registry needs a "
                                "higher serial"))
    if problems:
        return _refuse(*problems, notes=notes)
    after = TrustState(statement.serial, statement.registry_sha256, digest,
                       tuple(sorted(revoked.values())))
    return Verdict(True, notes=tuple(notes), statement=statement, statement_sha256=digest,
                   signers=tuple(sorted(signers)), expired=expired, state=after)


def _signers(statement: Statement, text: str, signatures, policy: RegistryPolicy,
             revoked: dict[str, Revocation], sig_file: str, notes: list[Problem]) -> set[str]:
    trusted = trusted_keys(policy)
    signed = CONTEXT + text.encode()
    valid: set[str] = set()
    for i, sig in enumerate(signatures):
        at = f"$.signatures[{i}]"
        key = trusted.get(sig.signer)
        if key is None:
            notes.append(Problem(sig_file, at, f"{sig.signer} is not a trusted key here; not counted"))
            continue
        if sig.signer in revoked:
            notes.append(Problem(sig_file, at, f"{sig.signer} is revoked ({revoked[sig.signer].reason});"
                                 " not counted"))
            continue
        try:
            key.verify(sig.signature, signed)
        except InvalidSignature:
            notes.append(Problem(sig_file, at, f"the signature of {sig.signer} does not verify: the "
                                 "statement was changed, or the signature is another's"))
            continue
        valid.add(sig.signer)
    return valid


def expiry(verdict: Verdict, policy: RegistryPolicy, now: float) -> str:
    """"valid", "expired" (past expires_at plus the skew) or "unsigned"."""
    if verdict.statement is None:
        return "unsigned"
    return "expired" if verdict.statement.expires_at + policy.clock_skew < now else "valid"
