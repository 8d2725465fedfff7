"""lab/doctor.py: on the host kernel every probe runs for real in a temporary
namespace, and nothing is left behind (root); the table and the conclusion are
checked on made-up answers (no root). The microVM's kernel: tests/vm/test_inspect.py."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from pyroute2 import IPRoute

from lab import doctor

root = pytest.mark.root

# This project's machine kind (README, "Tests"): a kernel without module support,
# built without VRF, XFRM interfaces, kernel ESP or netem.
HOST_PRESENT = {"netns", "veth", "bridge", "seg6", "nftables", "nf_hooks_lwtunnel"}
HOST_ABSENT = {"VRF", "ESP", "XFRM interfaces", "netem"}


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


def host_links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


@pytest.fixture(scope="module")
def probed():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    before, links = netns_list(), host_links()
    features = doctor.probe()
    return features, before, netns_list(), links, host_links()


@root
def test_probe_leaves_nothing(probed):
    _features, before, after, links, links_after = probed
    assert after == before  # `ip netns list` unchanged: the probe namespace is gone
    assert links_after == links  # and nothing was made in the host's namespace


@root
def test_every_feature_is_answered_with_what_it_enables(probed):
    features = probed[0]
    assert [f.name for f in features] == list(doctor.FEATURES)
    assert all(f.detail and f.allows for f in features)
    assert all(not f.detail.startswith("not probed") for f in features)


@root
@pytest.mark.skipif(os.path.exists("/proc/modules"),
                    reason="a kernel that loads modules: its features are not this host kind's")
def test_host_kernel_lacks_vrf_esp_xfrm_and_netem(probed):
    features = probed[0]
    present = {f.name for f in features if f.present}
    # SRv6 is there on most machines of this kind; some kernels are built without it
    seg6 = "seg6" in present
    assert present | {"seg6"} == HOST_PRESENT, doctor.report(features)
    assert {f.name for f in features if not f.present} == HOST_ABSENT | (set() if seg6 else {"seg6"})
    assert not doctor.can_run_here(features)
    text = doctor.report(features)
    missing = "XFRM interfaces, ESP" if seg6 else "seg6, XFRM interfaces, ESP"
    assert f"aronet-lab up cannot run here (missing: {missing})" in text
    assert "aronet-lab run --vm" in text
    by_name = {f.name: f for f in features}
    assert "EOPNOTSUPP" in by_name["VRF"].detail
    assert "qdisc kind is unknown" in by_name["netem"].detail


# ---------------------------------------------------------------- report and conclusion


def features(missing=()) -> list[doctor.Feature]:
    return [doctor.Feature(name, name not in missing,
                           f"{name} failed: EOPNOTSUPP" if name in missing else "ok",
                           allows, required)
            for name, (allows, required) in doctor.FEATURES.items()]


def test_every_feature_is_listed_once_with_what_it_enables():
    assert list(doctor.FEATURES) == ["netns", "veth", "bridge", "nftables", "seg6",
                                     "nf_hooks_lwtunnel", "XFRM interfaces", "ESP", "VRF", "netem"]
    optional = {n for n, (_, required) in doctor.FEATURES.items() if not required}
    assert optional == {"VRF", "netem"}


def test_all_present():
    fs = features()
    assert doctor.can_run_here(fs)
    assert doctor.conclusion(fs) == "aronet-lab up can run here: every feature is present"
    text = doctor.report(fs)
    lines = text.splitlines()
    assert lines[0].split() == ["feature", "here", "enables"]
    assert len(lines) == 1 + len(fs) + 2  # no detail lines when everything is there
    assert all(" yes " in line for line in lines[1:1 + len(fs)])
    assert lines[-1] == doctor.conclusion(fs)


def test_the_host_kind_needs_the_vm():
    fs = features(missing=("VRF", "ESP", "XFRM interfaces", "netem"))
    assert not doctor.can_run_here(fs)
    conclusion = doctor.conclusion(fs)
    assert conclusion.startswith("aronet-lab up cannot run here (missing: XFRM interfaces, ESP)")
    assert "aronet-lab run --vm" in conclusion
    text = doctor.report(fs)
    for name in ("VRF", "ESP", "XFRM interfaces", "netem"):
        row = next(line for line in text.splitlines() if line.startswith(f"{name} "))
        assert " NO " in row
        assert f"{name} failed: EOPNOTSUPP" in text  # the detail, under its row


def test_only_optional_features_missing_limits_but_allows():
    fs = features(missing=("VRF", "netem"))
    assert doctor.can_run_here(fs)
    c = doctor.conclusion(fs)
    assert c.startswith("aronet-lab up can run here, but ")
    assert "--mode netns" in c and "delay and rate" in c
    assert doctor.report_json(fs)["can_run_here"] is True
    assert {f["name"] for f in doctor.report_json(fs)["features"] if not f["present"]} == {
        "VRF", "netem"}


def test_without_a_namespace_nothing_else_is_probed(monkeypatch):
    def refuse(name):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(doctor.pr_netns, "create", refuse)
    fs = doctor.probe()
    assert [f.name for f in fs] == list(doctor.FEATURES)
    assert not any(f.present for f in fs)
    assert "run as root" in fs[0].detail
    assert all(f.detail == "not probed: no network namespace" for f in fs[1:])
    assert doctor.conclusion(fs).startswith("aronet-lab up cannot run here (missing: netns,")
