"""`aronet registry keygen | sign | verify | show | fetch`, end to end through main(),
and the HTTP fetch (aronet.adapters.http) against a local server: conditional
requests, and no empty or partial download ever replacing a registry."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading

import pytest
from builders import write_json

from aronet.adapters import http as fetch
from aronet.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def signer(tmp_path, capsys):
    key = tmp_path / "signer.pem"
    code, out, _ = run(capsys, "registry", "keygen", key)
    public, fp = out.splitlines()
    assert code == 0 and public.startswith("ed25519:") and fp.startswith("sha256:")
    assert key.stat().st_mode & 0o777 == 0o600
    return key, public, fp


def trust(public) -> list[str]:
    return ["--trusted", public, "--mesh", "lab"]


def test_sign_verify_show(world, signer, capsys):
    key, public, fp = signer
    reg = world.registry_path
    code, out, err = run(capsys, "registry", "sign", reg, "-k", key, "--mesh", "lab", "--serial", "4",
                         "--expires", "2030-02-01T00:00:00Z", "--at", "2030-01-01T00:00:00Z",
                         "--revoke-node", "example2/sun=laptop stolen")
    assert (code, err) == (0, ""), err
    assert out == (f"{reg}.sig: serial 4 of mesh lab, expires 2030-02-01T00:00:00Z, 0 key(s) and 1 "
                   "node(s) revoked, 1 signature(s)\n")
    code, out, err = run(capsys, "registry", "verify", reg, *trust(public), "--at", "2030-01-02T00:00:00Z")
    assert code == 0, err
    assert out.splitlines() == [
        f"{reg}: accepted: mesh lab, serial 4, 1 of 1 required signature(s), expires "
        "2030-02-01T00:00:00Z", f"  signed by {fp}", "  example2/sun: left out; revoked: laptop stolen"]
    code, out, _ = run(capsys, "registry", "show", reg, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["serial"] == 4 and doc["registry_matches"] and doc["signers"] == [fp]
    # the next sign carries the revocation and the serial forward
    code, out, _ = run(capsys, "registry", "sign", reg, "-k", key, "--at", "2030-01-03T00:00:00Z")
    assert code == 0 and "serial 5 of mesh lab" in out and "1 node(s) revoked" in out


def test_verify_refuses_with_exit_2_and_the_reason(world, signer, capsys):
    key, public, _ = signer
    reg = world.registry_path
    run(capsys, "registry", "sign", reg, "-k", key, "--mesh", "lab", "--at", "2030-01-01T00:00:00Z")
    code, _, err = run(capsys, "registry", "verify", reg, *trust(public), "--at", "2031-01-01T00:00:00Z")
    assert code == 2
    assert err.splitlines() == [f"{reg}.sig: $.statement.expires_at: expired at 2030-01-31T00:00:00Z "
                                "(now 2031-01-01T00:00:00Z, allowed skew 300 s)",
                                "1 problem found; nothing was changed"]
    doc = world.registry_doc()
    doc[0]["nodes"][0]["endpoints"][0]["port"] = 12026  # a valid registry, but another one
    write_json(reg, doc)
    code, _, err = run(capsys, "registry", "verify", reg, *trust(public), "--at", "2030-01-02T00:00:00Z")
    assert code == 2 and "was changed" in err and "Traceback" not in err


def test_cosign_adds_a_second_signer(world, signer, tmp_path, capsys):
    key, public, _ = signer
    second = tmp_path / "second.pem"
    _, out, _ = run(capsys, "registry", "keygen", second)
    public2 = out.splitlines()[0]
    reg = world.registry_path
    run(capsys, "registry", "sign", reg, "-k", key, "--mesh", "lab")
    both = ["--trusted", public, "--trusted", public2, "--threshold", "2", "--mesh", "lab"]
    assert run(capsys, "registry", "verify", reg, *both)[0] == 2
    assert run(capsys, "registry", "sign", reg, "-k", second, "--cosign")[0] == 0
    assert run(capsys, "registry", "verify", reg, *both)[0] == 0


def test_load_refuses_locally_without_an_agent(world, capsys, tmp_path):
    code, _, err = run(capsys, "load", "-r", world.registry_path, "-s", tmp_path / "none.sock")
    assert code == 1 and "no agent is running" in err


def test_config_registry_block_is_checked(world, capsys):
    doc = world.config("moon")
    doc["registry"] = {"trusted_keys": ["ed25519:AAAA"], "threshold": 2,
                       "source": "http://example.org/r.json", "signature": "optional"}
    path = write_json(world.config_path("moon"), doc)
    code, _, err = run(capsys, "config", "validate", path)
    assert code == 2
    assert err.splitlines() == [
        f"{path}: $.registry.trusted_keys[0]: an Ed25519 public key is 32 bytes, not 3",
        f'{path}: $.registry: signature \'optional\' needs "mesh": the name every statement must carry',
        f"{path}: $.registry.source: 'http://example.org/r.json' is plain HTTP: allowed only with "
        'signature "required" (anyone on the path could change an unsigned registry); use https',
        "3 problems found; nothing was changed"]


# ---------------------------------------------------------------- HTTP


class _Server(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lie_length: set[str] = set()
    seen: list[dict] = []

    def do_GET(self):
        type(self).seen.append({"path": self.path, "if-none-match": self.headers.get("If-None-Match")})
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = f'"{hash(body)}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body) + (10 if self.path in self.lie_length else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Server.files, _Server.lie_length, _Server.seen = {}, set(), []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_fetch_is_conditional_and_refuses_partial_or_empty_bodies(server):
    _, base = server
    _Server.files = {"/r.json": b"[]\n", "/r.json.sig": b"{}", "/empty": b"", "/short": b"abc"}
    _Server.lie_length = {"/short"}
    pair, changed = fetch.get_pair(base + "/r.json", fetch.Pair(), signed=True, timeout=5)
    assert changed and pair.registry.body == b"[]\n" and pair.signature.body == b"{}"
    again, changed = fetch.get_pair(base + "/r.json", pair, signed=True, timeout=5)
    assert not changed and again == pair
    assert _Server.seen[-1]["if-none-match"] == pair.signature.etag
    for path, why in (("/empty", "empty"), ("/short", "of 13 bytes"), ("/missing", "HTTP 404")):
        with pytest.raises(fetch.FetchError, match=why):
            fetch.get(base + path, timeout=5)


def test_registry_fetch_writes_only_what_verifies(world, signer, server, tmp_path, capsys):
    key, public, _ = signer
    _, base = server
    reg = world.registry_path
    run(capsys, "registry", "sign", reg, "-k", key, "--mesh", "lab")
    _Server.files = {"/r.json": reg.read_bytes(), "/r.json.sig": (reg.parent / (reg.name + ".sig")
                                                                  ).read_bytes()}
    out_file = tmp_path / "fetched.json"
    code, out, err = run(capsys, "registry", "fetch", base + "/r.json", "-o", out_file, *trust(public))
    assert code == 0, err
    assert out_file.read_bytes() == reg.read_bytes() and "replaced" in out
    _Server.files["/r.json"] = reg.read_bytes().replace(b"12025", b"12026")
    code, _, err = run(capsys, "registry", "fetch", base + "/r.json", "-o", out_file, *trust(public))
    assert code == 2 and "was changed" in err
    assert out_file.read_bytes() == reg.read_bytes()  # kept
    # plain HTTP without required signatures is refused before any request
    _Server.seen.clear()
    code, _, err = run(capsys, "registry", "fetch", base + "/r.json", "-o", out_file)
    assert code == 2 and "plain HTTP" in err and _Server.seen == []
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "fetched.json.tmp").unlink()
