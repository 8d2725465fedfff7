"""The `aronet` command line: exit status, stdout and stderr of every input command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from builders import NODES, endpoint, key_pair, make_config, write_json, write_key

from aronet import keys
from aronet.cli import main
from aronet.load import build_registry, load_registry

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def err_lines(err: str) -> list[str]:
    return err.splitlines()


# ---------------------------------------------------------------- config validate


def test_config_validate_ok(world, capsys):
    path = world.config_path("moon")
    assert run(capsys, "config", "validate", path) == (
        0, f"{path}: valid (example/moon, vrf mode)\n", "")


def test_config_validate_with_registry_ok(world, capsys):
    for name, spec in NODES.items():
        path = world.config_path(name)
        code, out, err = run(capsys, "config", "validate", path, "-r", world.registry_path)
        mode = spec["daemon"]["mode"]
        assert (code, out, err) == (
            0, f"{path}: valid ({spec['organization']}/{name}, {mode} mode)\n", "")


def test_config_validate_reports_every_problem(world, capsys):
    doc = world.config("moon")
    doc["daemon"]["network"] = "fd66::1/80"
    doc["endpoints"].append({"address": None, "port": 12025})
    doc["colour"] = "blue"
    path = write_json(world.config_path("moon"), doc)
    code, out, err = run(capsys, "config", "validate", path)
    assert code == 2
    assert out == ""
    assert err_lines(err) == [
        f"{path}: $: Additional properties are not allowed ('colour' was unexpected)",
        f"{path}: $.daemon.network: 'fd66::1/80' has prefix length /80; it must be /64 or shorter",
        f'{path}: $.endpoints[1].address_family: a null address needs an explicit address_family '
        '("ip4" or "ip6")',
        "3 problems found; nothing was changed",
    ]


def test_config_validate_against_registry_reports_both(world, capsys):
    other = world.root / "keys" / "other.pem"
    write_key(other)
    doc = world.config("moon")
    doc["private_key"] = "../keys/other.pem"
    cpath = write_json(world.config_path("moon"), doc)
    reg = world.registry_doc()
    reg[1]["nodes"][0]["endpoints"][0]["port"] = 70000
    rpath = write_json(world.registry_path, reg)
    code, out, err = run(capsys, "config", "validate", cpath, "--registry", rpath)
    assert out == ""
    assert code == 2
    assert err_lines(err) == [
        f"{rpath}: $[1].nodes[0].endpoints[0].port: 70000 is greater than the maximum of 65535",
        "1 problem found; nothing was changed",
    ]
    # with a valid registry, the key comparison runs
    write_json(world.registry_path, world.registry)
    code, _, err = run(capsys, "config", "validate", cpath, "--registry", rpath)
    assert code == 2
    assert err_lines(err) == [
        f"{cpath}: $.private_key: its public key does not match the key {rpath} lists for "
        "organization 'example'",
        "1 problem found; nothing was changed",
    ]


def test_config_validate_json_syntax(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{\n  "organization": "example", # comment\n}\n')
    code, _, err = run(capsys, "config", "validate", path)
    assert code == 2
    assert err_lines(err) == [
        f"{path}: line 2, column 30: invalid JSON: Expecting property name enclosed in double "
        "quotes (comments are not allowed in JSON)",
        "1 problem found; nothing was changed",
    ]


def test_config_validate_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.json"
    assert run(capsys, "config", "validate", path) == (
        2, "", f"{path}: $: cannot read: No such file or directory\n"
        "1 problem found; nothing was changed\n")


def test_config_validate_key_mode(world, capsys):
    os.chmod(world.key_path("example"), 0o644)
    path = world.config_path("earth")
    key = world.root / "earth" / ".." / "keys" / "example.pem"
    assert run(capsys, "config", "validate", path) == (
        2, "", f"{path}: $.private_key: key file {key} is accessible by group or others "
        f"(mode 0644); run: chmod 600 {key}\n1 problem found; nothing was changed\n")


# ---------------------------------------------------------------- registry validate


def test_registry_validate_ok(world, capsys):
    path = world.registry_path
    assert run(capsys, "registry", "validate", path) == (
        0, f"{path}: valid (4 nodes in 2 organizations)\n", "")


def test_registry_validate_reports_every_problem(world, capsys):
    doc = world.registry_doc()
    doc[0]["nodes"][1]["common_name"] = "moon"
    doc[1]["organization"] = "example"
    doc[1]["nodes"][1]["remarks"]["prefixs"][0] = "192.168.130.0/23"
    path = write_json(world.registry_path, doc)
    code, out, err = run(capsys, "registry", "validate", path)
    assert (code, out) == (2, "")
    assert err_lines(err) == [
        f"{path}: $[0].nodes[1].common_name: node name 'moon' is already used in organization "
        "'example' at $[0].nodes[0]",
        f"{path}: $[1].organization: organization 'example' is already listed at $[0]; "
        "list each organization once, with one key",
        f"{path}: $[1].nodes[1].remarks.prefixs[0]: 192.168.130.0/23 overlaps 192.168.130.0/24 "
        f"of node example/sun ({path} $[1].nodes[0].remarks.prefixs[0])",
        "3 problems found; nothing was changed",
    ]


# ---------------------------------------------------------------- key generate / public


def test_key_generate(tmp_path, capsys):
    path = tmp_path / "node.pem"
    code, out, err = run(capsys, "key", "generate", path)
    assert (code, err) == (0, "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert out.endswith("-----END PUBLIC KEY-----\n")
    keys.parse_public(out)  # an Ed25519 public key
    private = keys.parse_private(path.read_bytes())
    assert out == keys.public_pem(private)


def test_key_generate_ignores_umask(tmp_path, capsys):
    old = os.umask(0)
    try:
        assert run(capsys, "key", "generate", tmp_path / "k.pem")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_key_generate_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "node.pem"
    path.write_text("precious")
    assert run(capsys, "key", "generate", path) == (
        2, "", f"{path}: $: already exists; pass --force to overwrite\n"
        "1 problem found; nothing was changed\n")
    assert path.read_text() == "precious"


def test_key_generate_force_overwrites_and_tightens_mode(tmp_path, capsys):
    path = tmp_path / "node.pem"
    write_key(path, mode=0o644)
    old = path.read_bytes()
    code, out, err = run(capsys, "key", "generate", "--force", path)
    assert (code, err) == (0, "")
    assert path.read_bytes() != old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out == keys.public_pem(keys.parse_private(path.read_bytes()))


def test_key_generate_unwritable_is_exit_1(tmp_path, capsys):
    path = tmp_path / "missing-dir" / "k.pem"
    assert run(capsys, "key", "generate", path) == (
        1, "", f"aronet: {path}: cannot write: No such file or directory\n")


def test_key_public(world, capsys, tmp_path, monkeypatch):
    assert run(capsys, "key", "public", world.key_path("example2")) == (
        0, world.keys["example2"].public_pem, "")
    monkeypatch.chdir(world.root)  # a relative path is relative to the working directory
    assert run(capsys, "key", "public", "keys/example.pem") == (
        0, world.keys["example"].public_pem, "")


def test_key_public_problems(world, tmp_path, capsys):
    path = world.key_path("example")
    os.chmod(path, 0o644)
    assert run(capsys, "key", "public", path) == (
        2, "", f"{path}: $: key file {path} is accessible by group or others (mode 0644); "
        f"run: chmod 600 {path}\n1 problem found; nothing was changed\n")

    missing = tmp_path / "nope.pem"
    assert run(capsys, "key", "public", missing) == (
        2, "", f"{missing}: $: cannot read key file {missing}: No such file or directory\n"
        "1 problem found; nothing was changed\n")

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_path = tmp_path / "ec.pem"
    ec_path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(ec_path, 0o600)
    assert run(capsys, "key", "public", ec_path) == (
        2, "", f"{ec_path}: $: is an EC key; aronet needs Ed25519\n"
        "1 problem found; nothing was changed\n")


# ---------------------------------------------------------------- registry build


def test_registry_build_round_trip(world, capsys):
    configs = [world.config_path(n) for n in NODES]
    code, out, err = run(capsys, "registry", "build", *configs)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    built = build_registry(doc, "built.json")
    assert built.nodes == load_registry(str(world.registry_path)).nodes
    assert {o["organization"]: o["public_key"] for o in doc} == {
        org: pair.public_pem for org, pair in world.keys.items()}
    sun = next(n for o in doc for n in o["nodes"] if n["common_name"] == "sun")
    assert sun["endpoints"] == [
        {"address": None, "port": 12025, "serial_number": 0, "address_family": "ip4"}]


def test_registry_build_output_file_validates(world, capsys, tmp_path):
    out_path = tmp_path / "built.json"
    configs = [world.config_path(n) for n in NODES]
    assert run(capsys, "registry", "build", *configs, "-o", out_path) == (0, "", "")
    assert run(capsys, "registry", "validate", out_path) == (
        0, f"{out_path}: valid (4 nodes in 2 organizations)\n", "")
    assert not (tmp_path / "built.json.tmp").exists()
    for name in NODES:
        code, _, err = run(capsys, "config", "validate", world.config_path(name), "-r", out_path)
        assert (code, err) == (0, "")


def test_registry_build_one_key_per_organization(world, capsys):
    other = world.root / "keys" / "other.pem"
    write_key(other)
    doc = world.config("earth")
    doc["private_key"] = "../keys/other.pem"
    earth = write_json(world.config_path("earth"), doc)
    moon = world.config_path("moon")
    code, out, err = run(capsys, "registry", "build", moon, earth)
    assert (code, out) == (2, "")
    # configs are taken in (organization, name) order: earth comes first
    assert err_lines(err) == [
        f"{moon}: $.private_key: organization 'example' already has another key (from {earth}); "
        "a registry holds one key per organization",
        "1 problem found; nothing was changed",
    ]


def test_registry_build_same_node_twice(world, capsys):
    moon = world.config_path("moon")
    assert run(capsys, "registry", "build", moon, moon) == (
        2, "", f"{moon}: $.common_name: example/moon is given twice\n"
        "1 problem found; nothing was changed\n")


def test_registry_build_reports_every_bad_config(world, capsys, tmp_path):
    bad1 = write_json(tmp_path / "a.json", {"organization": "x"})
    bad2 = tmp_path / "b.json"
    bad2.write_text("{,}")
    code, out, err = run(capsys, "registry", "build", bad1, bad2, world.config_path("moon"),
                         "-o", tmp_path / "r.json")
    assert (code, out) == (2, "")
    assert err_lines(err) == [
        f"{bad1}: $: 'private_key' is a required property",
        f"{bad1}: $: 'common_name' is a required property",
        f"{bad1}: $: 'daemon' is a required property",
        f"{bad1}: $: 'endpoints' is a required property",
        f"{bad2}: line 1, column 2: invalid JSON: Expecting property name enclosed in double "
        "quotes",
        "5 problems found; nothing was changed",
    ]
    assert not (tmp_path / "r.json").exists()


def test_registry_build_overlapping_configs_is_exit_2(world, capsys, tmp_path):
    pair = key_pair()
    a = write_json(tmp_path / "a.json", make_config(private_key=pair.private_pem,
                                                    common_name="a", network="fd70::1/64"))
    b = write_json(tmp_path / "b.json", make_config(private_key=pair.private_pem,
                                                    common_name="b", network="fd71::1/64",
                                                    endpoints=[endpoint("198.51.100.2")]))
    out_path = tmp_path / "r.json"
    code, out, err = run(capsys, "registry", "build", a, b, "-o", out_path)
    assert (code, out) == (2, "")
    assert "overlaps 192.168.128.0/24" in err
    assert err_lines(err)[-1] == "1 problem found; nothing was changed"
    assert not out_path.exists()


def test_registry_build_unwritable_output(world, capsys, tmp_path):
    out_path = tmp_path / "missing-dir" / "r.json"
    assert run(capsys, "registry", "build", world.config_path("moon"), "-o", out_path) == (
        1, "", f"aronet: {out_path}: cannot write: No such file or directory\n")


# ---------------------------------------------------------------- argparse


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["key"], ["config", "validate"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "usage: aronet" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("aronet ")


# ---------------------------------------------------------------- as a real process


def _aronet(*argv, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "aronet", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60)


def test_subprocess_exit_2_without_traceback(world, tmp_path):
    doc = world.config("sun")
    doc["daemon"]["network"] = "192.168.1.1/24"
    doc["endpoints"][0].pop("address_family")
    cpath = write_json(world.config_path("sun"), doc)
    proc = _aronet("config", "validate", cpath, "-r", world.registry_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{cpath}: $.daemon.network: '192.168.1.1/24' is IPv4; the overlay network must be IPv6",
        f'{cpath}: $.endpoints[0].address_family: a null address needs an explicit '
        'address_family ("ip4" or "ip6")',
        "2 problems found; nothing was changed",
    ]

    bad = tmp_path / "seed.json"
    bad.write_text('[\n  {"organization": "example",}\n]\n')
    proc = _aronet("registry", "validate", bad)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{bad}: line 2, column 30: invalid JSON: Expecting property name enclosed in double "
        "quotes (a trailing comma is not allowed in JSON)",
        "1 problem found; nothing was changed",
    ]


def test_subprocess_key_generate_and_public(tmp_path):
    proc = _aronet("key", "generate", "k.pem", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    again = _aronet("key", "generate", "k.pem", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    public = _aronet("key", "public", "k.pem", cwd=tmp_path)
    assert (public.returncode, public.stdout) == (0, proc.stdout)
