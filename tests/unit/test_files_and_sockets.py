"""The agent's files and sockets against other users (issue 18, "Keys, sockets and
files"): key files read as ssh reads them, a config holding its key inline, the
control socket's peer check and its answer to bad requests, write_atomic's temporary
file, and the private runtime and state directories. Some cases chown to nobody, so
they need root (skipped otherwise)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
from builders import key_pair, make_config, write_json, write_key

from aronet import keys
from aronet.adapters import files
from aronet.adapters.files import ensure_private_dir, write_atomic
from aronet.daemon import control
from aronet.errors import AronetError, InputError
from aronet.load import build_config, load_config
from aronet.paths import Paths

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to nobody")


def read(path, base_dir: str = "/") -> bytes:
    return keys.read_private(str(path), base_dir)


def problem(path, base_dir: str = "/") -> str:
    with pytest.raises(keys.KeyProblem) as e:
        read(path, base_dir)
    return str(e.value)


# ------------------------------------------------------------------ key files


def test_a_good_key_file_is_read(tmp_path):
    pair = write_key(tmp_path / "k.pem")
    assert read(tmp_path / "k.pem").decode() == pair.private_pem
    assert keys.read_private("k.pem", str(tmp_path)).decode() == pair.private_pem


def test_the_key_file_is_checked_through_its_descriptor(tmp_path, monkeypatch):
    """No stat-then-open gap: the file is opened once and fstat()ed; only its
    directories are looked at by name."""
    write_key(tmp_path / "k.pem")
    seen, real = [], os.stat
    monkeypatch.setattr(keys.os, "stat", lambda p, *a, **k: seen.append(str(p)) or real(p, *a, **k))
    read(tmp_path / "k.pem")
    assert str(tmp_path) in seen and "/" in seen
    assert str(tmp_path / "k.pem") not in seen


def test_a_symlink_as_the_last_component_is_refused(tmp_path):
    write_key(tmp_path / "real.pem")
    os.symlink(tmp_path / "real.pem", tmp_path / "link.pem")
    assert problem(tmp_path / "link.pem") == (
        f"key file {tmp_path}/link.pem is a symbolic link; give the real file "
        f"({tmp_path}/real.pem)")


def test_a_symlinked_directory_is_followed_and_its_real_path_checked(tmp_path):
    safe, unsafe = tmp_path / "safe", tmp_path / "unsafe"
    safe.mkdir(mode=0o700)
    unsafe.mkdir()
    unsafe.chmod(0o777)
    pair = write_key(safe / "k.pem")
    write_key(unsafe / "k.pem")
    os.symlink(safe, tmp_path / "to-safe")
    os.symlink(unsafe, tmp_path / "to-unsafe")
    assert read(tmp_path / "to-safe" / "k.pem").decode() == pair.private_pem
    assert f"is in {unsafe}, which group or others can write" in problem(
        tmp_path / "to-unsafe" / "k.pem")


def test_a_fifo_is_not_a_regular_file_and_does_not_block(tmp_path):
    fifo = tmp_path / "k.pem"
    os.mkfifo(fifo, 0o600)
    out = []
    t = threading.Thread(target=lambda: out.append(problem(fifo)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "opening a FIFO blocked"
    assert out == [f"key file {fifo} is not a regular file"]


def test_a_path_with_a_newline_is_shown_quoted_on_one_line(tmp_path):
    path = f"{tmp_path}/k.pem\n\x1b[31m"
    message = problem(path)
    assert message == f"cannot read key file {path!r}: No such file or directory"
    assert "\n" not in message and "\x1b" not in message


def test_a_device_is_not_a_regular_file():
    assert problem("/dev/null") == "key file /dev/null is not a regular file"


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    big = tmp_path / "k.pem"
    big.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * keys.MAX_KEY_FILE)
    big.chmod(0o600)
    assert problem(big) == f"key file {big} is larger than {keys.MAX_KEY_FILE} bytes; it is no key"
    exact = tmp_path / "exact.pem"
    exact.write_bytes(b"A" * keys.MAX_KEY_FILE)
    exact.chmod(0o600)
    assert len(read(exact)) == keys.MAX_KEY_FILE


@root_only
def test_a_key_owned_by_another_user_is_refused(tmp_path):
    write_key(tmp_path / "k.pem")
    os.chown(tmp_path / "k.pem", NOBODY, NOBODY)
    assert problem(tmp_path / "k.pem") == (
        f"key file {tmp_path}/k.pem is owned by uid {NOBODY}; it must be owned by root or "
        f"the agent's user (uid 0); run: chown 0 {tmp_path}/k.pem")


@pytest.mark.parametrize("mode", [0o770, 0o757, 0o722, 0o2775])
def test_a_group_or_world_writable_parent_is_refused(tmp_path, mode):
    d = tmp_path / "keys"
    d.mkdir()
    write_key(d / "k.pem")
    d.chmod(mode)
    assert problem(d / "k.pem") == (
        f"key file {d}/k.pem is in {d}, which group or others can write (mode "
        f"{stat.S_IMODE(mode):04o}), so they could replace the key; run: chmod go-w {d}")


def test_a_writable_grandparent_is_refused_too(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_key(tmp_path / "a" / "b" / "k.pem")
    (tmp_path / "a").chmod(0o777)
    assert f"is in {tmp_path}/a, which group or others can write" in problem(
        tmp_path / "a" / "b" / "k.pem")


@root_only
def test_a_sticky_world_writable_parent_passes_only_when_root_owns_it(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    pair = write_key(d / "k.pem")
    d.chmod(0o1777)  # like /tmp: no one can rename or remove another's entries
    assert read(d / "k.pem").decode() == pair.private_pem
    os.chown(d, NOBODY, NOBODY)
    assert f"is in {d}, which is owned by uid {NOBODY}" in problem(d / "k.pem")


@root_only
def test_a_parent_owned_by_another_user_is_refused(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o755)
    write_key(d / "k.pem")
    os.chown(d, NOBODY, NOBODY)
    assert problem(d / "k.pem") == (
        f"key file {d}/k.pem is in {d}, which is owned by uid {NOBODY}, who could replace "
        "the key; keep keys in directories owned by root or the agent's user")


# ------------------------------------------------------------- an inline key


def test_a_config_holding_its_key_inline_must_be_private(tmp_path):
    pair = key_pair()
    path = write_json(tmp_path / "config.json", make_config(private_key=pair.private_pem))
    assert load_config(str(path)).node.public_key == pair.public_pem
    for mode in (0o640, 0o604, 0o644):
        path.chmod(mode)
        with pytest.raises(InputError) as e:
            load_config(str(path))
        assert [str(p) for p in e.value.problems] == [
            f"{path}: $.private_key: {path} holds the private key inline and is accessible by "
            f"group or others (mode {mode:04o}); run: chmod 600 {path} (or put the key in a "
            "file of its own)"]


def test_a_config_naming_a_key_file_may_be_readable(tmp_path):
    pair = write_key(tmp_path / "k.pem")
    path = write_json(tmp_path / "config.json", make_config(private_key="k.pem"))
    path.chmod(0o644)
    assert load_config(str(path)).node.public_key == pair.public_pem


def test_a_config_built_in_memory_has_no_mode_to_check(tmp_path):
    pair = key_pair()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "config.json").chmod(0o644)  # a file of that name does not matter
    doc = make_config(private_key=pair.private_pem)
    assert build_config(doc, str(tmp_path / "config.json")).node.public_key == pair.public_pem


# ------------------------------------------------------------- control socket


def _exchange(path: str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


def _serve_and(path: str, handler, client):
    async def main():
        server = await control.serve(path, handler)
        try:
            return await asyncio.to_thread(client)
        finally:
            server.close()
    return asyncio.run(main())


async def _echo(req):
    if req.get("cmd") == "crash":
        raise RuntimeError("a bug")
    return {"ok": True, "echo": req}


BAD = [
    (b"[1, 2]\n", "bad request: not a JSON object but an array"),
    (b"42\n", "bad request: not a JSON object but a number"),
    (b'"status"\n', "bad request: not a JSON object but a string"),
    (b"null\n", "bad request: not a JSON object but null"),
    (b"\xff\xfe{}\n", "bad request: not UTF-8 text"),
    (b"{bad\n", "bad request: invalid JSON: Expecting property name enclosed in double "
     "quotes: line 1 column 2 (char 1)"),
    (b"\n", "bad request: invalid JSON: Expecting value: line 2 column 1 (char 1)"),
    (b"[" * 4000 + b"\n", "bad request: invalid JSON: nested too deeply"),
]


def test_a_bad_request_gets_an_error_reply_and_the_server_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "MAX_REQUEST", 4096)
    path = str(tmp_path / "c.sock")

    def client():
        got = [_exchange(path, data) for data, _ in BAD]
        got.append(_exchange(path, b'{"cmd": "' + b"x" * 8192 + b'"}\n'))
        got.append(_exchange(path, b'{"cmd": "crash"}\n'))
        got.append(_exchange(path, b'{"cmd": "status"}\n'))
        return got

    got = _serve_and(path, _echo, client)
    want = [{"ok": False, "error": error} for _, error in BAD] + [
        {"ok": False, "error": "bad request: the request is longer than 4096 bytes"},
        {"ok": False, "error": "internal error: RuntimeError: a bug"},
        {"ok": True, "echo": {"cmd": "status"}},
    ]
    assert got == want


def test_only_root_and_the_agents_user_may_talk():
    assert control.peer_allowed(0, euid=1000)
    assert control.peer_allowed(1000, euid=1000)
    assert not control.peer_allowed(1001, euid=1000)
    assert control.peer_allowed(os.geteuid())


@root_only
def test_another_user_is_refused_by_its_peer_credentials():
    """Even when the socket is reachable (made 0666 here), nobody gets no answer."""
    calls = []

    async def handler(req):
        calls.append(req)
        return {"ok": True}

    directory = tempfile.mkdtemp(prefix="aronet-peercred-")  # tmp_path is root's only
    os.chmod(directory, 0o711)
    path = os.path.join(directory, "c.sock")
    script = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
              "s.sendall(b'{\"cmd\": \"stop\"}\\n')\nprint(s.makefile('rb').readline().decode())")

    def client():
        os.chmod(path, 0o666)
        r = subprocess.run([os.path.realpath(sys.executable), "-I", "-S", "-c", script, path],
                           user=NOBODY, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), _exchange(path, b'{"cmd": "info"}\n')

    try:
        theirs, mine = _serve_and(path, handler, client)
    finally:
        shutil.rmtree(directory)
    assert theirs == {"ok": False,
                      "error": "permission denied: only root and uid 0 may use this control socket"}
    assert mine == {"ok": True}
    assert calls == [{"cmd": "info"}]


# ------------------------------------------------------------- write_atomic


def test_write_atomic_never_follows_a_planted_temporary_file(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "guess")
    os.symlink(victim, tmp_path / ".bird.conf.guess.tmp")
    with pytest.raises(FileExistsError):
        write_atomic(str(tmp_path / "bird.conf"), "evil\n")
    assert victim.read_text() == "keep\n"
    assert os.path.islink(tmp_path / ".bird.conf.guess.tmp")  # not ours: left alone
    assert not (tmp_path / "bird.conf").exists()


def test_write_atomic_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.symlink(victim, tmp_path / "bird.conf")
    assert write_atomic(str(tmp_path / "bird.conf"), "new\n") is True
    assert victim.read_text() == "keep\n"
    assert not os.path.islink(tmp_path / "bird.conf")
    assert (tmp_path / "bird.conf").read_text() == "new\n"


def test_write_atomic_gives_the_exact_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_atomic(str(tmp_path / "a"), "a\n", mode=0o644)
    finally:
        os.umask(old)
    write_atomic(str(tmp_path / "b"), "b\n", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_write_atomic_removes_its_temporary_file_on_error(tmp_path, monkeypatch, failing):
    target = tmp_path / "bird.conf"
    target.write_text("old\n")

    def fail(*_a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, failing, fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(str(target), "new\n")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["bird.conf"]
    assert target.read_text() == "old\n"


# --------------------------------------------------- runtime and state dirs


def test_a_private_dir_is_created_0700_with_its_parents(tmp_path):
    d = tmp_path / "a" / "b"
    ensure_private_dir(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_an_existing_dir_is_forced_to_0700(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    d.chmod(0o755)
    (d / "kept").write_text("x")
    ensure_private_dir(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert (d / "kept").read_text() == "x"


@root_only
def test_a_dir_of_another_user_is_refused(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o755)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(AronetError) as e:
        ensure_private_dir(str(d))
    assert str(e.value) == (f"{d} is owned by uid {NOBODY}, not by the agent's user (uid 0); "
                            f"remove it or run: chown 0 {d}")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755  # refused: not changed either


def test_a_symlink_or_a_file_is_no_private_dir(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(AronetError, match="is a symbolic link; give the agent the real directory"):
        ensure_private_dir(str(tmp_path / "link"))
    assert stat.S_IMODE(os.stat(tmp_path / "elsewhere").st_mode) == 0o755
    (tmp_path / "file").write_text("x")
    with pytest.raises(AronetError, match=r"cannot create the directory .*/file: File exists"):
        ensure_private_dir(str(tmp_path / "file"))


@root_only
def test_the_agent_refuses_a_runtime_dir_of_another_user(tmp_path):
    from aronet.daemon.agent import EXIT_FAILURE, Agent

    pair = key_pair()
    config = build_config(make_config(private_key=pair.private_pem), "config.json")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chown(run_dir, NOBODY, NOBODY)
    agent = Agent(config, Paths.for_instance("t", str(run_dir), str(tmp_path / "state")))

    def must_not_run(*_a):
        raise AssertionError("the agent went on")
    agent.netlink.preflight = must_not_run
    assert asyncio.run(agent.run()) == EXIT_FAILURE
    assert os.listdir(run_dir) == []
