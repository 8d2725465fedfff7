"""The agent's registry gate (aronet/daemon/trusted.py) and its load path: a signed
registry is verified before anything changes, what was accepted is kept (rollback
protection survives a restart), revocations reach the planner at once, and expiry
freezes or fails as the policy says, with the clock injected. No system is touched:
the agent's sync is replaced by a recorder."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from aronet import keys
from aronet.daemon.agent import EXIT_INPUT, Agent
from aronet.errors import InputError
from aronet.load import Signed, build_config, build_registry
from aronet.paths import Paths
from aronet.trust import Revocation, Statement, compact, encode_statement, envelope_text, sign
from aronet.trust.statement import parse_time, registry_hash

T0 = parse_time("2030-01-01T00:00:00Z")
SIGNER = keys.generate()


def _node(name: str, net: str, address: str) -> dict:
    return {"common_name": name, "endpoints": [{"address": address, "port": 12025}],
            "remarks": {"network": net}}


def _world(tmp_path, on_expiry="freeze"):
    key, other = keys.generate(), keys.generate()
    config = build_config({
        "private_key": keys.private_pem(key).decode(), "organization": "o", "common_name": "me",
        "daemon": {"network": "fd10::1/64"}, "endpoints": [{"address": "192.0.2.1", "port": 12025}],
        "registry": {"mesh": "lab", "trusted_keys": [compact(SIGNER)], "on_expiry": on_expiry}},
        "config.json")
    doc = [{"public_key": keys.public_pem(key), "organization": "o",
            "nodes": [_node("me", "fd10::1/64", "192.0.2.1"), _node("b", "fd11::1/64", "192.0.2.2")]},
           {"public_key": keys.public_pem(other), "organization": "p",
            "nodes": [_node("c", "fd12::1/64", "192.0.2.3")]}]
    return config, json.dumps(doc, indent=2) + "\n"


def signed(text: str, serial: int, *, expires=T0 + 86400, revoked_nodes=(), file="r.json") -> Signed:
    st = Statement("lab", serial, T0, expires, registry_hash(text.encode()),
                   revoked_nodes=tuple(Revocation(n, "test") for n in revoked_nodes))
    body = encode_statement(st)
    return Signed(file, text, file + ".sig", envelope_text(body, sign(body, [SIGNER])))


def agent_of(tmp_path, config, now=T0 + 60) -> tuple[Agent, list]:
    paths = Paths.for_instance("t", str(tmp_path / "run"), str(tmp_path / "state"))
    os.makedirs(paths.state_dir, exist_ok=True)
    agent = Agent(config, paths)
    agent.trust.clock = lambda: now
    synced = []

    async def resync(registry=None):
        synced.append(registry)
        agent.rt.registry = registry or agent.rt.registry
        return {}
    agent.resync = resync
    return agent, synced


def names(registry) -> list[str]:
    return [n.name for n in registry.nodes]


def test_a_signed_load_is_applied_and_kept(tmp_path):
    config, text = _world(tmp_path)
    agent, synced = agent_of(tmp_path, config)
    reply = asyncio.run(agent.handlers.load_signed(signed(text, 3)))
    assert names(synced[-1]) == ["o/b", "o/me", "p/c"]
    assert reply["registry"]["serial"] == 3 and reply["registry"]["state"] == "valid"
    with open(agent.paths.registry) as f:
        assert f.read() == text  # the exact bytes: the .sig still verifies after a restart
    with open(agent.paths.trust_state) as f:
        assert json.load(f)["serial"] == 3
    assert os.path.exists(agent.paths.registry_sig)


@pytest.mark.parametrize("tamper", ["registry", "sig"])
def test_a_tampered_file_is_refused_before_anything_changes(tmp_path, tamper):
    config, text = _world(tmp_path)
    agent, synced = agent_of(tmp_path, config)
    s = signed(text, 3)
    if tamper == "registry":
        s = Signed(s.file, text.replace("192.0.2.3", "192.0.2.9"), s.sig_file, s.sig_text)
    else:
        s = Signed(s.file, text, s.sig_file, s.sig_text.replace('\\"serial\\": 3', '\\"serial\\": 4'))
    with pytest.raises(InputError) as e:
        asyncio.run(agent.handlers.load_signed(s))
    assert e.value.problems
    assert synced == [] and not os.path.exists(agent.paths.registry)
    assert not os.path.exists(agent.paths.trust_state)


def test_rollback_is_refused_after_a_restart(tmp_path):
    config, text = _world(tmp_path)
    agent, _ = agent_of(tmp_path, config)
    asyncio.run(agent.handlers.load_signed(signed(text, 5)))
    again, synced = agent_of(tmp_path, config)  # a new agent reads the kept state
    with pytest.raises(InputError, match="4 is below 5"):
        asyncio.run(again.handlers.load_signed(signed(text, 4)))
    assert synced == []


def test_a_parsed_registry_is_refused_when_signatures_are_checked(tmp_path):
    config, text = _world(tmp_path)
    agent, synced = agent_of(tmp_path, config)
    with pytest.raises(InputError, match="exact bytes"):
        asyncio.run(agent.handlers.load(json.loads(text), "r.json"))
    assert synced == []


def test_a_revoked_node_leaves_the_planned_registry_at_once(tmp_path):
    config, text = _world(tmp_path)
    agent, synced = agent_of(tmp_path, config)
    asyncio.run(agent.handlers.load_signed(signed(text, 1)))
    reply = asyncio.run(agent.handlers.load_signed(signed(text, 2, revoked_nodes=["p/c"])))
    assert names(synced[-1]) == ["o/b", "o/me"]
    assert reply["registry"]["revoked"] == 1
    assert reply["registry"]["left_out"] == ["p/c: left out; revoked: test"]
    assert agent.handlers.agent.trust.info(agent.rt.registry).revoked == 1


def test_the_start_refuses_a_bad_registry_before_touching_anything(tmp_path):
    config, text = _world(tmp_path)
    paths = Paths.for_instance("t", str(tmp_path / "run"), str(tmp_path / "state"))
    s = signed(text, 1, file=str(tmp_path / "r.json"))
    bad = Signed(s.file, text.replace("fd12", "fd13"), s.sig_file, s.sig_text)
    agent = Agent(config, paths, build_registry(json.loads(bad.text), bad.file), bad)
    agent.trust.clock = lambda: T0 + 60
    agent.netlink.preflight = lambda: pytest.fail("the kernel was reached")
    assert asyncio.run(agent.run()) == EXIT_INPUT
    assert not os.path.exists(paths.trust_state)


@pytest.mark.parametrize(("on_expiry", "peers_after"), [("freeze", ["o/b", "o/me", "p/c"]),
                                                        ("fail", ["o/me"])])
def test_expiry_freezes_or_fails_as_time_passes(tmp_path, on_expiry, peers_after):
    config, text = _world(tmp_path, on_expiry)
    agent, _ = agent_of(tmp_path, config)
    asyncio.run(agent.handlers.load_signed(signed(text, 1, expires=T0 + 3600)))
    registry = agent.rt.registry
    assert agent.trust.tick(registry) is registry  # still valid
    agent.trust.clock = lambda: T0 + 3600 + 301  # past expiry and the 300 s skew
    assert names(agent.trust.tick(registry)) == peers_after
    info = agent.trust.info(registry)
    assert info.state == ("expired (frozen)" if on_expiry == "freeze" else "expired (failed)")
    # a fresh statement ends it; an expired one is refused
    with pytest.raises(InputError, match="expired"):
        asyncio.run(agent.handlers.load_signed(signed(text, 2, expires=T0 + 3600)))
    asyncio.run(agent.handlers.load_signed(signed(text, 2, expires=T0 + 86400)))
    assert agent.trust.info(agent.rt.registry).state == "valid"


def test_an_unreadable_trust_state_is_never_taken_for_serial_zero(tmp_path):
    config, _ = _world(tmp_path)
    paths = Paths.for_instance("t", str(tmp_path / "run"), str(tmp_path / "state"))
    os.makedirs(paths.state_dir)
    with open(paths.trust_state, "w") as f:
        f.write("{broken")
    with pytest.raises(InputError, match="unreadable"):
        Agent(config, paths)


def test_a_recheck_that_waited_for_a_load_does_not_put_the_old_registry_back():
    """Seen in the microVM: the periodic re-check read the registry in force, then
    waited for the lock a load held, and applied the old registry after the load."""
    import asyncio
    import threading
    from types import SimpleNamespace

    from aronet.daemon import agent as agent_mod

    agent = agent_mod.Agent.__new__(agent_mod.Agent)
    agent._lock = asyncio.Lock()
    agent.rt = agent_mod.Runtime(registry="old")
    agent.trust = SimpleNamespace(tick=lambda registry: registry)
    agent.telemetry = SimpleNamespace(reconciled=lambda *a: None)
    agent._calls = dict
    applied, release = [], threading.Event()

    def sync(registry):
        applied.append(registry)
        if registry == "new":
            release.wait(5)  # the load is in the middle of its sync
        return f"desired({registry})"
    agent.sync = sync

    async def main():
        load = asyncio.create_task(agent.resync("new"))
        while not applied:
            await asyncio.sleep(0.01)
        recheck = asyncio.create_task(agent.resync(recheck=True))  # waits for the lock
        await asyncio.sleep(0.05)
        release.set()
        await load
        await recheck
    asyncio.run(main())
    assert applied == ["new", "new"] and agent.rt.registry == "new"
