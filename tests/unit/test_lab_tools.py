"""aronet-lab's tools, their pure parts: generate, the impairment model and its
target, netem's arguments, the per-port loss rule, inspect's rendering, the chaos
schedule and summary, and the command line that takes them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import yaml

from aronet.errors import InputError
from lab import chaos, generate, impair, inspect, underlay
from lab.bench import common
from lab.cli import parser
from lab.topology import load_topology, parse_topology, plan_lab, port_loss_rule

SEED = "lab/examples/seed.yaml"


def plan_of(doc: dict):
    return plan_lab(parse_topology(yaml.safe_dump(doc), "gen.yaml"))


# ---------------------------------------------------------------- generate


@pytest.mark.parametrize("template", generate.TEMPLATES)
@pytest.mark.parametrize("n,nat", [(1, 0), (3, 0), (5, 2), (8, 1)])
def test_generated_topologies_load(template, n, nat):
    if nat > {"ring": n // 2}.get(template, n - 1):
        pytest.skip("more NAT nodes than the template takes")
    doc = generate.checked(template, n, nat=nat)
    plan = plan_of(doc)
    assert [x.name for x in plan.nodes] == generate.node_names(n)
    assert sum(1 for x in plan.nodes if x.nat) == nat
    assert yaml.safe_load(generate.as_yaml(doc)) == doc


def test_ring_and_star_block_all_but_their_edges():
    ring = plan_of(generate.generate("ring", 6))
    t = parse_topology(yaml.safe_dump(generate.generate("ring", 6)), "r.yaml")
    assert len(t.blocked) == 15 - 6 and ("n1", "n2") not in t.blocked and ("n1", "n6") not in t.blocked
    star = parse_topology(yaml.safe_dump(generate.generate("star", 5)), "s.yaml")
    assert set(star.blocked) == {(a, b) for i, a in enumerate(["n2", "n3", "n4", "n5"])
                                 for b in ["n2", "n3", "n4", "n5"][i + 1:]}
    assert len(ring.nodes) == 6


def test_ring_never_puts_two_neighbours_behind_nat():
    doc = generate.checked("ring", 6, nat=3)
    inside = {m for r in doc["nat"].values() for m in r["inside"]}
    assert inside == {"n2", "n4", "n6"}
    names = generate.node_names(6)
    assert not any(names[i] in inside and names[(i + 1) % 6] in inside for i in range(6))


@pytest.mark.parametrize("args,message", [
    (("ring", 4, 3), "at most N/2"), (("star", 3, 3), "at most N-1"), (("full-mesh", 0, 0), "give 1 to"),
    (("clos", 3, 0), "not a template"),
])
def test_generate_refuses_what_it_cannot_make(args, message):
    template, n, nat = args
    with pytest.raises(InputError) as e:
        generate.generate(template, n, nat=nat)
    assert message in str(e.value)


def test_generate_options_and_mixed_modes():
    doc = generate.checked("full-mesh", 4, mode="netns", routing="bird", vrf=2, name="mix")
    plan = plan_of(doc)
    assert [x.mode for x in plan.nodes] == ["vrf", "vrf", "netns", "netns"]
    assert {x.config["daemon"]["routing"] for x in plan.nodes} == {"bird"}
    with pytest.raises(InputError, match="babeld runs in netns mode only"):
        generate.checked("full-mesh", 4, routing="babeld", vrf=1)


def test_the_benchmarks_mesh_is_generate_full_mesh():
    """The same documents as the benchmarks' generator had: a, b, c up to three."""
    assert common.mesh_topology(3, name="tri", hello=0.2) == {
        "name": "tri", "nodes": {"a": {"organization": "bench"}, "b": {"organization": "bench2"},
                                 "c": {"organization": "bench"}},
        "lans": {"wan": {"members": ["a", "b", "c"]}}, "options": {"babel": {"hello_interval": 0.2}}}
    doc = common.mesh_topology(6, name="mesh6", routing="bird", vrf_share=0.5)
    assert list(doc["nodes"]) == [f"n{i}" for i in range(1, 7)]
    assert [v.get("mode") for v in doc["nodes"].values()] == ["vrf"] * 3 + [None] * 3


def test_generate_command(tmp_path):
    out = tmp_path / "ring.yaml"
    r = subprocess.run([sys.executable, "-m", "lab.cli", "generate", "ring", "5", "--nat", "2",
                        "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(load_topology(out).nodes) == 5
    bad = subprocess.run([sys.executable, "-m", "lab.cli", "generate", "ring", "4", "--nat", "3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "at most N/2" in bad.stderr


# ---------------------------------------------------------------- impair


@pytest.fixture(scope="module")
def dual():
    return plan_lab(load_topology("lab/examples/dualstack.yaml"))


def test_impair_names_a_lan_a_link_or_two_members(dual):
    assert impair.target(dual, "core").members == ("a1", "a2", "b1", "b2", "c1", "home")
    assert impair.target(dual, "a1", "b1") == impair.Target("ab", ("a1", "b1"))
    assert impair.target(dual, "ab", to="b1") == impair.Target("ab", ("b1",))
    assert impair.describe_target(impair.target(dual, "ab", to="b1")) == "ab toward b1"


@pytest.mark.parametrize("args,message", [
    (("nope",), "'nope' is not a LAN or link of lab dual (they are: core, ab)"),
    (("home:c2",), "is a NAT inside link"),
    (("a1", "a2"), "no link joins 'a1' and 'a2'"),
    (("ab", None, "c1"), "--to c1: not on 'ab' (its members: a1, b1)"),
])
def test_impair_refuses_what_names_nothing(dual, args, message):
    with pytest.raises(InputError) as e:
        impair.target(dual, *args)
    assert message in str(e.value) and str(e.value).startswith("aronet-lab impair: LINK: ")


def test_impairments_and_what_is_in_force(dual):
    assert impair.declared(dual) == {"ab": {"a1": impair.Impairment(loss=2), "b1": impair.Impairment(loss=2)}}
    slow = impair.Impairment.of(delay=50, jitter=5, loss=1, rate="10mbit")
    assert str(slow) == "delay 50 ms ± 5 ms, loss 1%, rate 10mbit" and slow.needs_netem
    assert impair.Impairment.from_json(json.loads(json.dumps(slow.as_json()))) == slow
    state = impair.updated(impair.declared(dual), impair.target(dual, "ab", to="b1"), slow)
    assert state["ab"] == {"a1": impair.Impairment(loss=2), "b1": slow}  # asymmetric
    cleared = impair.updated(state, impair.target(dual, "ab"), impair.Impairment())
    assert cleared == {}
    for bad, message in (({"jitter": 3}, "give both"), ({}, "say what"),
                         ({"rate": "fast"}, "rate fast is not like")):
        with pytest.raises(InputError, match=message):
            impair.Impairment.of(**bad)
    assert not impair.Impairment.of(loss=5).needs_netem


def test_netem_arguments_and_rates():
    assert underlay.netem_arguments(None, None, 0, None) == []
    assert underlay.netem_arguments(20, 2.5, 1, "1mbit") == ["delay", "20ms", "2.5ms", "loss", "1%",
                                                            "rate", "1mbit"]
    with pytest.raises(ValueError):
        underlay.netem_arguments(None, None, 0, "fast")
    assert underlay.rate_bytes("512kbit") == 64000 and underlay.rate_bytes("100kbps") == 100000
    assert underlay.rate_bytes("1.5gbit") == 187500000 and underlay.rate_bytes("0bit") == 0
    for bad in ("10", "mbit", "fast", "40gbps"):
        with pytest.raises(ValueError):
            underlay.rate_bytes(bad)


def test_per_port_loss_rule(dual):
    rule = port_loss_rule(dual, "ab", "b1", 7)["rule"]
    assert rule["comment"] == "loss ab to b1" and rule["chain"] == "loss"
    assert {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ab-b1"}} in rule["expr"]
    assert port_loss_rule(dual, "ab", "b1", 100)["rule"]["expr"][-1] == {"drop": None}
    with pytest.raises(ValueError, match="not on"):
        port_loss_rule(dual, "ab", "c1", 5)


# ---------------------------------------------------------------- inspect


def inspect_doc() -> dict:
    node = {
        "node": "moon", "organization": "example", "namespace": "seed-moon", "router_namespace": "seed-moon",
        "pid": 42, "running": True, "mode": "vrf", "routing": "bird",
        "underlay": [{"interface": "eth1", "segment": "wan", "ipv4": "10.1.1.2/24", "ipv6": None}],
        "overlay": {"network": "fd66::1/64", "address": "fd66::1", "extra_ip": ["192.168.128.1"],
                    "prefixes": ["192.168.128.0/24"]},
        "agent_error": None,
        "tunnels": [{"name": "ar1", "peer": "example/earth", "family": "ip4", "ike": "ESTABLISHED",
                     "child": "INSTALLED", "interface_up": True, "up": True, "babel_metric": 96},
                    {"name": "ar2", "peer": "example2/sun", "family": "ip4", "ike": "CONNECTING",
                     "child": "NONE", "interface_up": False, "up": False, "babel_metric": None}],
        "files": {"config": "/r/moon/config.json", "registry": "/r/registry.json", "log": "/r/moon/agent.log",
                  "runtime": "/r/moon/run"},
        "impairments": [{"segment": "wan", "impairment": "delay 20 ms", "delay_ms": 20}],
        "interfaces": {"seed-moon": [{"name": "eth1", "state": "UP", "kind": "veth", "mtu": 1500,
                                      "addresses": ["10.1.1.2/24"]}]},
    }
    dead = {**node, "node": "sun", "pid": 43, "running": False, "agent_error": "no agent is running",
            "tunnels": [], "impairments": []}
    return {"lab": "seed", "directory": "/r", "nodes": [node, dead],
            "impairments": [{"segment": "wan", "toward": "moon", "impairment": "delay 20 ms",
                             "delay_ms": 20}]}


def test_inspect_table():
    text = inspect.as_table(inspect_doc())
    lines = text.splitlines()
    assert lines[0].split() == ["node", "namespace", "pid", "mode", "routing", "underlay", "overlay",
                                "tunnels"]
    assert lines[1].split()[:6] == ["moon", "seed-moon", "42", "vrf", "bird", "eth1:10.1.1.2/24"]
    assert "1/2 up" in lines[1] and "43 (dead)" in lines[2] and "agent: no agent is running" in lines[2]
    assert ("ar2          -> example2/sun             DOWN (IKE CONNECTING, CHILD NONE, "
            "interface down)") in text
    assert "  wan toward moon: delay 20 ms" in text and "interfaces in" not in text
    assert "moon: interfaces in seed-moon:" in inspect.as_table(inspect_doc(), interfaces=True)


def test_inspect_json_and_csv():
    doc = inspect_doc()
    assert json.loads(inspect.as_json(doc)) == doc
    rows = list(csv.DictReader(io.StringIO(inspect.as_csv(doc))))
    assert [r["node"] for r in rows] == ["moon", "sun"]
    assert rows[0]["tunnels"] == "2" and rows[0]["tunnels_up"] == "1" and rows[1]["running"] == "false"
    assert rows[0]["impairments"] == "wan: delay 20 ms" and "interfaces" not in rows[0]
    with_ifs = list(csv.DictReader(io.StringIO(inspect.as_csv(doc, interfaces=True))))
    assert with_ifs[0]["interfaces"] == "seed-moon:eth1"


# ---------------------------------------------------------------- chaos


@pytest.fixture(scope="module")
def seed():
    return plan_lab(load_topology(SEED))


def test_the_same_seed_gives_the_same_schedule(seed):
    a = chaos.make_schedule(seed, minutes=30, seed=7)
    b = chaos.make_schedule(seed, minutes=30, seed=7)
    c = chaos.make_schedule(seed, minutes=30, seed=8)
    assert a == b and a.as_json() == b.as_json() and a != c
    assert {e.kind for e in a.events} == set(chaos.FAULTS)  # 30 minutes: every kind comes up
    assert [e.index for e in a.events] == list(range(len(a.events)))


def test_schedule_targets_and_holds(seed):
    sched = chaos.make_schedule(seed, minutes=10, seed=1, faults=["partition", "kill-charon", "impair"],
                                hold=5)
    where = chaos.choices(seed)
    for e in sched.events:
        assert e.targets in where[e.kind]
        assert e.hold == (0.0 if e.kind == "kill-charon" else 5)
        assert 2 <= e.pause <= 8
        if e.kind == "impair":
            assert e.params["delay_ms"] in chaos.schedule.IMPAIR_DELAYS_MS
            members = seed.segment(e.targets[0]).members
            assert e.params.get("to", members[0]) in members
    # sun is behind gw: no partition between sun and gw's own face, and never "sun gw"
    assert ("sun", "gw") not in where["partition"] and ("moon", "sun") in where["partition"]
    assert ("sun", "gw:sun") in where["link"] and ("moon", "wan") in where["link"]
    # enough events for the minutes even if every heal were instant
    assert len(sched.events) >= 10 * 60 / (5 + 8)


def test_schedule_refuses_unknown_faults(seed):
    with pytest.raises(ValueError, match="unknown fault"):
        chaos.make_schedule(seed, minutes=1, seed=1, faults=["meteor"])


def test_chaos_summary_and_text():
    timeline = [
        {"event": 0, "kind": "partition", "what": "partition moon mars", "at_s": 0, "reconverged_s": 4.0},
        {"event": 1, "kind": "partition", "what": "partition moon sun", "at_s": 20, "reconverged_s": 8.0},
        {"event": 2, "kind": "partition", "what": "partition moon sun", "at_s": 40, "reconverged_s": 5.0},
        {"event": 3, "kind": "kill-agent", "what": "kill-agent sun", "at_s": 60, "reconverged_s": None},
    ]
    violations = [{"event": 3, "invariant": "reconverged", "detail": "checks still fail after 180 s"}]
    s = chaos.summarize(timeline, violations)
    assert s == {"events": 4, "faults": {"kill-agent": 1, "partition": 3},
                 "reconvergence_s": {"kill-agent": {"n": 0, "median": None, "max": None},
                                     "partition": {"n": 3, "median": 5.0, "max": 8.0}},
                 "violations": {"reconverged": 1}}
    result = {"summary": s, "seconds": 80, "schedule": {"seed": 3}, "bound_s": 180, "violations": violations,
              "rss_peak_kb": {"moon": 51200}, "rss_limit_mb": 200}
    text = chaos.as_text(result)
    assert "partition         3       5.0     8.0" in text and "kill-agent        1         -       -" in text
    assert "#3: reconverged: checks still fail after 180 s" in text and "50.0 MB" in text


def test_a_refused_registry_gives_two_nodes_one_network():
    reg = [{"organization": "o", "public_key": "k", "nodes": [
        {"common_name": "a", "remarks": {"network": "fd00:1::1/64"}},
        {"common_name": "b", "remarks": {"network": "fd00:2::1/64"}}]}]
    bad = chaos.refused_registry(reg)
    assert bad[0]["nodes"][1]["remarks"]["network"] == "fd00:1::1/64"
    assert reg[0]["nodes"][1]["remarks"]["network"] == "fd00:2::1/64"  # a copy


# ---------------------------------------------------------------- the command line


def test_the_new_commands_parse():
    p = parser()
    a = p.parse_args(["impair", "a", "b", "--to", "b", "--delay", "50", "--jitter", "5", "--loss", "2"])
    assert (a.link, a.peer, a.to, a.delay, a.jitter, a.loss) == ("a", "b", "b", 50.0, 5.0, 2)
    assert p.parse_args(["inspect", "--format", "csv", "--interfaces"]).format == "csv"
    assert p.parse_args(["save"]).directory == "out"
    c = p.parse_args(["chaos", "--minutes", "3", "--seed", "1", "--faults", "link,reload"])
    assert c.faults == ["link", "reload"] and c.bound == chaos.DEFAULTS["bound"]
    assert p.parse_args(["run", "seed"]).save == "out"
    for bad in (["impair", "wan", "--loss", "101"], ["impair", "wan", "--delay", "-1"],
                ["chaos", "--minutes", "1", "--seed", "1", "--faults", "meteor"], ["generate", "ring", "0"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2


def test_a_command_that_writes_files_through_the_vm_lands_where_asked(tmp_path):
    """save and chaos in the persistent VM write into a staging directory the guest
    may write; the host moves it to DIR, the latest link included."""
    import os
    import types

    from lab import cli
    from lab.cli.common import OUT_ENV

    def forward(state_dir, argv, env):
        out = env[OUT_ENV]
        os.makedirs(os.path.join(out, "save-1"))
        with open(os.path.join(out, "save-1", "manifest.json"), "w") as f:
            f.write("{}")
        os.symlink("save-1", os.path.join(out, "latest"))
        return 0

    (tmp_path / "vm").mkdir()
    fake = types.SimpleNamespace(PERSISTENT_DIR=str(tmp_path / "vm"), forward=forward)
    dest = tmp_path / "out"
    assert cli._forward_writing(fake, ["save"], str(dest)) == 0
    assert os.readlink(dest / "latest") == "save-1" and (dest / "latest" / "manifest.json").exists()
    assert os.listdir(tmp_path / "vm") == []  # the staging directory is gone
