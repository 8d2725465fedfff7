"""aronet.trust: the signed statement and a node's checks of it, pure, with the clock
given (issue 21): signing, k of n, tampering of either file, mesh, rollback, expiry
with the skew, revocation, and the envelope's own validation."""

from __future__ import annotations

import base64
import json

import pytest
from builders import build_world
from hypothesis import given, settings
from hypothesis import strategies as st

from aronet import keys
from aronet.load import build_registry
from aronet.model import RegistryPolicy
from aronet.trust import (
    CONTEXT,
    Revocation,
    Statement,
    TrustState,
    compact,
    decode_envelope,
    effective,
    encode_statement,
    envelope_text,
    fingerprint,
    parse_signer_key,
    sign,
    verify,
)
from aronet.trust.statement import parse_time, registry_hash

T0 = parse_time("2030-01-01T00:00:00Z")
DAY = 86400
REGISTRY = b'[{"organization": "o", "public_key": "x", "nodes": []}]\n'
SIGNERS = [keys.generate() for _ in range(3)]


def policy(n: int = 1, threshold: int = 1, **kw) -> RegistryPolicy:
    return RegistryPolicy(signature=kw.pop("signature", "required"), mesh="lab",
                          trusted_keys=tuple(compact(k) for k in SIGNERS[:n]), threshold=threshold, **kw)


def statement(serial: int = 1, registry: bytes = REGISTRY, mesh: str = "lab", **kw) -> Statement:
    return Statement(mesh=mesh, serial=serial, issued_at=kw.pop("issued_at", T0),
                     expires_at=kw.pop("expires_at", T0 + 30 * DAY),
                     registry_sha256=registry_hash(registry), **kw)


def envelope(st: Statement, signers=SIGNERS[:1]) -> str:
    text = encode_statement(st)
    return envelope_text(text, sign(text, list(signers)))


NO_STATE = TrustState()


def check(sig: str | None, pol: RegistryPolicy | None = None, state: TrustState = NO_STATE,
          now: float = T0 + DAY, registry: bytes = REGISTRY, **kw):
    return verify(registry, sig, pol or policy(), state, now, **kw)


def messages(v) -> list[str]:
    return [f"{p.path}: {p.message}" for p in v.refused]


# ---------------------------------------------------------------- signing and keys


def test_a_signed_registry_is_accepted_with_its_signer():
    v = check(envelope(statement()))
    assert v.accepted and v.refused == ()
    assert v.signers == (fingerprint(SIGNERS[0]),)
    assert v.state == TrustState(1, registry_hash(REGISTRY), v.statement_sha256, ())


def test_keys_in_compact_and_pem_form_are_the_same_key():
    key = SIGNERS[0]
    assert fingerprint(compact(key)) == fingerprint(keys.public_pem(key)) == fingerprint(key)
    assert fingerprint(key).startswith("sha256:") and len(fingerprint(key)) == 71
    with pytest.raises(keys.KeyProblem, match="32 bytes"):
        parse_signer_key("ed25519:" + base64.b64encode(b"short").decode())
    with pytest.raises(keys.KeyProblem, match="not a public key"):
        parse_signer_key("hello")


def test_the_signature_is_domain_separated():
    """A signature over the statement's bytes alone (without CONTEXT) does not count."""
    text = encode_statement(statement())
    raw = SIGNERS[0].sign(text.encode())
    doc = json.loads(envelope_text(text, sign(text, SIGNERS[:1])))
    doc["signatures"][0]["signature"] = base64.b64encode(raw).decode()
    v = check(json.dumps(doc))
    assert not v.accepted
    assert any("does not verify" in m for m in messages(v))
    assert SIGNERS[0].public_key().verify(sign(text, SIGNERS[:1])[0].signature, CONTEXT + text.encode()) \
        is None


# ---------------------------------------------------------------- threshold


@pytest.mark.parametrize(("signed_by", "threshold", "ok"), [
    (0, 1, False), (1, 1, True), (1, 2, False), (2, 2, True), (3, 2, True)])
def test_k_of_n_distinct_trusted_signers(signed_by, threshold, ok):
    v = check(envelope(statement(), SIGNERS[:signed_by]), policy(n=3, threshold=threshold))
    assert v.accepted is ok
    if not ok:
        assert messages(v)[-1] == (f"$.signatures: {signed_by} valid signature"
                                   f"{'' if signed_by == 1 else 's'} by trusted keys; this node "
                                   f"requires {threshold}")


def test_an_untrusted_signer_and_a_repeated_signer_do_not_count():
    text = encode_statement(statement())
    stranger = keys.generate()
    sigs = sign(text, [SIGNERS[0], stranger])
    doc = json.loads(envelope_text(text, sigs))
    doc["signatures"].append(dict(doc["signatures"][0]))  # the same signer twice
    v = check(json.dumps(doc), policy(n=3, threshold=2))
    assert not v.accepted
    assert f"$.signatures[1]: {fingerprint(stranger)} is not a trusted key here; not counted" in messages(v)


def test_cosigning_keeps_the_statement_and_adds_a_signer():
    text = encode_statement(statement())
    first = sign(text, SIGNERS[:1])
    both = sign(text, SIGNERS[1:2], first)
    assert [s.signer for s in both] == [fingerprint(SIGNERS[0]), fingerprint(SIGNERS[1])]
    assert check(envelope_text(text, both), policy(n=2, threshold=2)).accepted


# ---------------------------------------------------------------- tampering


def test_a_changed_registry_is_refused_by_its_hash():
    v = check(envelope(statement()), registry=REGISTRY.replace(b'"o"', b'"p"'))
    assert not v.accepted
    assert v.refused[0].file == "registry.json"
    assert "is not the" in v.refused[0].message and "was changed" in v.refused[0].message


def test_a_changed_statement_is_refused_by_its_signature():
    doc = json.loads(envelope(statement()))
    doc["statement"] = doc["statement"].replace('"serial": 1', '"serial": 9')
    v = check(json.dumps(doc))
    assert not v.accepted
    assert any("does not verify" in m for m in messages(v))


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda d: d.pop("signatures"), "$"),
    (lambda d: d.update(aronet_registry_signature=2), "$.aronet_registry_signature"),
    (lambda d: d["signatures"][0].update(signature="AAAA"), "$.signatures[0].signature"),
    (lambda d: d.update(statement="{not json"), "$.statement"),
    (lambda d: d.update(statement=d["statement"].replace('"mesh"', '"mesh": "x", "mesh"')),
     "$.statement"),
    (lambda d: d.update(statement=d["statement"].replace('"serial": 1', '"serial": 0')),
     "$.statement.serial"),
    (lambda d: d.update(statement=d["statement"].replace("2030-01-31", "2030-13-31")),
     "$.statement.expires_at"),
])
def test_a_malformed_envelope_is_refused_at_its_path(mutate, where):
    doc = json.loads(envelope(statement()))
    mutate(doc)
    v = check(json.dumps(doc))
    assert not v.accepted
    assert v.refused[0].path == where, messages(v)
    assert v.refused[0].file == "registry.json.sig"


def test_a_sig_that_is_no_json_is_refused_with_its_line():
    v = check("{\n  oops")
    assert not v.accepted and v.refused[0].path.startswith("line 2, column")


def test_another_mesh_is_refused():
    v = check(envelope(statement(mesh="other")))
    assert messages(v) == ["$.statement.mesh: 'other' is another mesh; this node is in 'lab'"]


# ---------------------------------------------------------------- modes


def test_a_missing_signature_when_required_is_refused():
    v = check(None)
    assert not v.accepted and "requires a signed registry" in v.refused[0].message


def test_optional_accepts_unsigned_until_a_signed_one_was_accepted():
    pol = policy(signature="optional")
    assert check(None, pol).accepted
    v = check(None, pol, state=TrustState(4, "a", "b"))
    assert not v.accepted and "serial 4" in v.refused[0].message
    # but a bad signature is refused even when optional
    assert not check(envelope(statement(mesh="x")), pol).accepted


def test_off_checks_nothing():
    assert check("garbage", RegistryPolicy()).accepted


# ---------------------------------------------------------------- rollback


def test_rollback_lower_serial_and_same_serial_with_another_registry_are_refused():
    first = check(envelope(statement(serial=5)))
    assert first.accepted
    state = first.state
    assert check(envelope(statement(serial=5)), state=state).accepted  # the same one again
    assert check(envelope(statement(serial=6)), state=state).accepted
    lower = check(envelope(statement(serial=4)), state=state)
    assert messages(lower) == ["$.statement.serial: 4 is below 5, the highest serial this node "
                               "accepted: a rollback"]
    other = b"[]\n"
    same = check(envelope(statement(serial=5, registry=other)), state=state, registry=other)
    assert messages(same) == ["$.statement.serial: 5 is the serial this node accepted already, with "
                              "another registry: a new registry needs a higher serial"]
    resigned = check(envelope(statement(serial=5, expires_at=T0 + 60 * DAY)), state=state)
    assert "with another statement" in messages(resigned)[0]


def test_trust_state_round_trips_and_refuses_junk():
    s = TrustState(3, "a" * 64, "b" * 64, (Revocation("sha256:" + "c" * 64, "lost"),))
    assert TrustState.from_json(json.loads(json.dumps(s.to_json()))) == s
    for junk in ({}, {"serial": -1, "registry_sha256": "", "statement_sha256": ""}, [], None):
        with pytest.raises(ValueError):
            TrustState.from_json(junk)


@settings(max_examples=40, deadline=None)
@given(accepted=st.integers(1, 2**40), offered=st.integers(1, 2**40))
def test_only_a_higher_or_equal_serial_passes(accepted, offered):
    state = TrustState(accepted, registry_hash(REGISTRY), "x")
    v = check(envelope(statement(serial=offered)), state=state)
    assert v.accepted is (offered > accepted)


# ---------------------------------------------------------------- expiry and the clock


@pytest.mark.parametrize(("now", "ok"), [
    (T0 - 301, False),  # issued in the future beyond the skew
    (T0 - 299, True),
    (T0 + 30 * DAY + 299, True),  # expired, but within the skew
    (T0 + 30 * DAY + 301, False),
])
def test_validity_window_with_the_allowed_skew(now, ok):
    v = check(envelope(statement()), now=now)
    assert v.accepted is ok, messages(v)


def test_an_expired_statement_in_force_is_accepted_as_expired():
    sig = envelope(statement())
    later = T0 + 31 * DAY
    assert not check(sig, now=later).accepted
    v = check(sig, now=later, current=True)
    assert v.accepted and v.expired
    assert v.notes[-1].path == "$.statement.expires_at"


# ---------------------------------------------------------------- revocation


def test_revocations_take_nodes_and_organizations_out(tmp_path):
    world = build_world(tmp_path)
    reg = build_registry(world.registry_doc(), "registry.json")
    names = [n.name for n in reg.nodes]
    sun = next(n for n in reg.nodes if n.common_name == "sun")
    moon = next(n for n in reg.nodes if n.common_name == "moon")
    out, lines = effective(reg, (), (Revocation("example2/SUN", "stolen"),), moon.key)
    assert [n.name for n in out.nodes] == [n for n in names if n != sun.name]
    assert lines == [f"{sun.name}: left out; revoked: stolen"]
    fp = fingerprint(keys.parse_public(sun.public_key))
    out, lines = effective(reg, (Revocation(fp, "leaked"),), (), moon.key)
    assert all(n.organization != sun.organization for n in out.nodes)
    assert all("leaked" in line for line in lines)
    out, lines = effective(reg, (), (Revocation(moon.name, "gone"),), moon.key)
    assert [n.key for n in out.nodes] == [moon.key] and lines[-1].startswith("this node itself")


def test_a_revoked_key_stays_revoked_in_later_statements():
    fp = "sha256:" + "d" * 64
    first = check(envelope(statement(serial=1, revoked_keys=(Revocation(fp, "leaked"),))))
    later = check(envelope(statement(serial=2)), state=first.state)
    assert later.accepted and later.revoked_keys == (Revocation(fp, "leaked"),)


def test_a_revoked_signer_no_longer_counts():
    fp = fingerprint(SIGNERS[0])
    state = TrustState(1, "", "", (Revocation(fp, "leaked"),))
    v = check(envelope(statement(serial=2)), state=state)
    assert not v.accepted and any("is revoked (leaked)" in m for m in messages(v))


def test_decode_gives_back_what_was_signed():
    st_ = statement(serial=7, revoked_nodes=(Revocation("o/n", "why"),))
    got, text, sigs = decode_envelope(envelope(st_), "x.sig")
    assert got == st_ and text == encode_statement(st_) and len(sigs) == 1
