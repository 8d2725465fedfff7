"""The microVM's stacks (lab/vm/roots.py): where a root lives and when it is rebuilt,
which kernel boots it, and the vng command line for a root of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.vm import boot, host, roots


def test_the_root_name_changes_with_what_goes_into_it(monkeypatch):
    s = roots.STACKS["debian13"]
    before = s.root
    assert before.name.startswith("debian13-") and before.parent == roots.CACHE
    monkeypatch.setattr(roots, "PACKAGES", (*roots.PACKAGES, "jq"))
    assert s.root != before
    monkeypatch.setattr(roots, "PACKAGES", roots.PACKAGES[:-1])
    assert s.root == before
    monkeypatch.setattr(roots, "REQUIREMENTS", ("pyroute2==0.9.8",))
    assert s.root != before
    assert roots.STACKS["debian12"].root is None  # the host's own root: nothing to build


def test_an_unknown_stack_is_named():
    with pytest.raises(host.VMError, match=r"unknown stack 'debian11'.*debian12, debian13"):
        roots.stack("debian11")


def test_only_a_complete_root_counts_and_its_newest_kernel_boots(tmp_path, monkeypatch):
    monkeypatch.setattr(roots, "CACHE", tmp_path)
    s = roots.STACKS["debian13"]
    assert not roots.ready(s)
    assert "the debian13 root is not built: ci/build-root debian13" in (roots.available("debian13") or "")
    (s.root / "boot").mkdir(parents=True)
    assert not roots.ready(s)  # a directory without the marker is an interrupted build
    (s.root / ".aronet-root").write_text("debian13\n")
    assert roots.ready(s)
    with pytest.raises(host.VMError, match="no kernel"):
        roots.kernel_of(s.root)
    for v in ("6.12.9+deb13-amd64", "6.12.117+deb13-amd64"):
        (s.root / "boot" / f"vmlinuz-{v}").write_text("")
    assert roots.kernel_of(s.root).endswith("vmlinuz-6.12.117+deb13-amd64")  # 117 > 9


def test_a_root_of_its_own_is_booted_with_its_shares_at_their_host_paths():
    args = boot.vng_args("/r/boot/vmlinuz-6.12", Path("/w/out/vm.sh"), rwdirs=[Path("/w")], cwd="/w",
                         cpus=2, memory="2G", kvm=False, cached=True, root=Path("/r"))
    assert args[:5] == ["vng", "--run", "/r/boot/vmlinuz-6.12", "--root", "/r"]
    assert "--rwdir=/w=/w" in args and "--cwd" not in args
    assert any("path=/r," in a for a in args)  # the page-cached view serves the root's files
    host_root = boot.vng_args("/boot/vmlinuz", Path("/w/vm.sh"), rwdirs=[Path("/w/out")], cwd="/w",
                              cpus=2, memory="2G", kvm=False, cached=True)
    assert "--root" not in host_root and "--rwdir=/w/out" in host_root
    assert host_root[host_root.index("--cwd") + 1] == "/w" and any("path=/," in a for a in host_root)


def test_the_guest_runs_the_roots_python():
    text = boot.guest_script("true", "/w", {}, Path("/w/out"), [], venv_bin="/opt/aronet/venv/bin")
    assert "export PATH=/opt/aronet/venv/bin:" in text
