"""The lab's signed registry (lab/signing.py): sign_lab makes a registry every node's
config accepts, and resign carries the serial and revocations forward, as
`aronet-lab revoke` needs (lab/revoke.py; its distribution runs in the VM tier)."""

from __future__ import annotations

import os

from aronet.load import load_config, read_signed
from aronet.trust import TrustState, decode_envelope, verify
from lab import signing
from lab.revoke import Revoked


def test_sign_lab_then_revoke(world):
    directory = str(world.root)
    configs = [str(world.config_path(n)) for n in ("moon", "sun")]
    os.makedirs(os.path.join(directory, "keys"), exist_ok=True)
    sig = signing.sign_lab(directory, "lab", configs)
    config = load_config(configs[0])
    assert config.registry.signature == "required" and config.registry.mesh == "lab"
    signed = read_signed(signing.registry_file(directory))
    assert signed.sig_file == sig
    now = decode_envelope(signed.sig_text, sig)[0].issued_at + 1
    first = verify(signed.data, signed.sig_text, config.registry, TrustState(), now)
    assert first.accepted and first.statement.serial == 1
    signing.resign(directory, revoke_nodes=(("example2", "sun", "lost"),))
    signed = read_signed(signing.registry_file(directory))
    second = verify(signed.data, signed.sig_text, config.registry, first.state, now + 1)
    assert second.accepted and second.statement.serial == 2
    assert [r.subject for r in second.revoked_nodes] == ["example2/sun"]


def test_the_revoke_report_says_who_is_late():
    r = Revoked("example2/sun", 2, cut_off={"moon": 1.5, "earth": 2.0})
    assert r.ok and r.seconds == 2.0 and r.as_text().endswith("PASS: every peer cut it off in 2.0 s")
    late = Revoked("example2/sun", 2, cut_off={"moon": 1.0}, waiting=["earth"])
    assert not late.ok and "earth" in late.as_text() and late.as_text().endswith("FAIL: not every peer "
                                                                                "cut it off")
