"""The host <-> persistent-VM channel (lab/vm/channel.py, lab/vm/guest.py) and the
host-side lifecycle in lab/vm/persistent.py, without a VM: the server runs on one end
of a socketpair, or behind a fake "vng" that listens on the channel socket the way
QEMU does."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from builders import processes_left

from lab import cli, vm
from lab.vm import channel
from lab.vm import guest as vmguest

LAB_CLI = [sys.executable, "-m", "lab.cli"]  # aronet-lab, without relying on the venv's script


# -- framing -------------------------------------------------------------------


def test_encode_is_one_ascii_line_even_with_newlines_and_unicode():
    msg = {"id": 1, "out": "a\nb\r\n\u00e9\u2603\n"}
    line = channel.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("ascii")  # no raw non-ASCII on the wire
    assert channel.Decoder().feed(line) == [msg]


def test_decoder_joins_partial_lines_and_splits_many():
    d = channel.Decoder()
    wire = channel.encode({"id": 1}) + channel.encode({"id": 2, "x": "y"}) + channel.encode({"id": 3})
    got = []
    for i in range(0, len(wire), 5):  # every split point a 5-byte stride hits
        got += d.feed(wire[i : i + 5])
    assert got == [{"id": 1}, {"id": 2, "x": "y"}, {"id": 3}]
    assert d.pending == 0
    assert d.feed(b'{"id": 4') == [] and d.pending
    assert d.feed(b"}\n\n") == [{"id": 4}]  # blank lines are skipped


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n"])
def test_decoder_refuses_what_is_not_a_message(line):
    with pytest.raises(channel.ChannelError):
        channel.Decoder().feed(line)


def test_decoder_refuses_an_endless_line():
    d = channel.Decoder(max_line=100)
    with pytest.raises(channel.ChannelError, match="longer than 100"):
        d.feed(b"x" * 101)
    assert d.pending == 0


def test_exit_code_of_a_signal_is_the_shells():
    assert vmguest._exit_code(3) == 3
    assert vmguest._exit_code(-signal.SIGINT) == 130


# -- server and client over a socketpair --------------------------------------


class Pair:
    """A Server on one end of a socketpair, in a thread; the test holds the other end."""

    def __init__(self, command=None, main=None):
        self.host, self.guest = socket.socketpair()
        self.server = vmguest.Server(self.guest.fileno(), self.guest.fileno(), command=command or LAB_CLI,
                                     main=main)
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.result = self.server.serve()

    def close(self):
        self.host.close()
        self.thread.join(timeout=40)
        self.guest.close()

    def send(self, msg):
        self.host.sendall(channel.encode(msg))

    def replies(self, n, timeout=30.0):
        self.host.settimeout(timeout)
        got = []
        for msg in channel.messages(self.host):
            got.append(msg)
            if len(got) == n:
                break
        return got


@pytest.fixture
def pair():
    made = []

    def make(command=None, main=None):
        made.append(Pair(command, main))
        return made[-1]

    yield make
    for p in made:
        p.close()


# "fork": the guest's default (lab.cli imported once, a fork per request);
# "process": a fresh aronet-lab per request (the fallback).
MODES = {"fork": {"main": cli.main}, "process": {}}


@pytest.fixture(autouse=True)
def as_in_the_guest(request, monkeypatch, tmp_path):
    """The server here plays the guest: the aronet-lab it runs must run commands itself,
    as it does in a VM, and never forward them to a persistent VM that happens to be
    up on this machine (it did, and the command waited for that VM's channel). The
    tests of forwarding itself (fake_vm) are the host's side."""
    if "fake_vm" not in request.fixturenames:
        monkeypatch.setenv("ARONET_VM_RWDIR", str(tmp_path))


@pytest.mark.parametrize("mode", MODES)
def test_help_through_the_channel(pair, mode):
    p = pair(**MODES[mode])
    out, err = io.StringIO(), io.StringIO()
    assert channel.run_remote(p.host, ["--help"], stdout=out, stderr=err) == 0
    assert "usage: aronet-lab" in out.getvalue()
    assert err.getvalue() == ""


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_command_gives_its_exit_code_and_stderr(pair, tmp_path, mode):
    p = pair(**MODES[mode])
    out, err = io.StringIO(), io.StringIO()
    rc = channel.run_remote(p.host, ["check", "--dir", str(tmp_path / "no-such-lab")], stdout=out, stderr=err)
    assert rc != 0
    assert "aronet-lab:" in err.getvalue()
    rc = channel.run_remote(p.host, ["no-such-command"], stdout=out, stderr=err)
    assert rc == 2 and "invalid choice" in err.getvalue()


def test_output_streams_before_the_exit(pair):
    # The second line is only printed once the client has seen the first one:
    # the command waits for a file the client creates when "first" arrives.
    p = pair(command=["sh", "-c"])
    gate = f"/tmp/aronet-vmserve-gate-{os.getpid()}"
    script = f"echo first; echo oops >&2; while [ ! -e {gate} ]; do sleep 0.05; done; echo second; exit 3"

    class Out(io.StringIO):
        def write(self, s):
            if "first" in s:
                Path(gate).touch()
            return super().write(s)

    out, err = Out(), io.StringIO()
    try:
        assert channel.run_remote(p.host, [script], stdout=out, stderr=err) == 3
    finally:
        Path(gate).unlink(missing_ok=True)
    assert out.getvalue() == "first\nsecond\n"
    assert err.getvalue() == "oops\n"


def test_cwd_and_env_reach_the_command(pair, tmp_path):
    p = pair(command=["sh", "-c"])
    out = io.StringIO()
    rc = channel.run_remote(p.host, ['pwd; echo "$ARONET_X"'], stdout=out, stderr=io.StringIO(),
                            cwd=str(tmp_path), env={"ARONET_X": "42"})
    assert rc == 0 and out.getvalue() == f"{tmp_path}\n42\n"
    # a cwd the other side does not have: the command still runs, where the server is
    out = io.StringIO()
    assert channel.run_remote(p.host, ["pwd"], stdout=out, stderr=io.StringIO(), cwd="/no/such/dir") == 0
    assert out.getvalue() == f"{os.getcwd()}\n"


def test_utf8_split_across_chunks_arrives_whole(pair):
    p = pair(command=[sys.executable, "-c"])
    code = "import sys,time; b='\u00e9'.encode()*3; w=sys.stdout.buffer; " \
           "w.write(b[:1]); w.flush(); time.sleep(0.2); w.write(b[1:]); w.flush()"
    out = io.StringIO()
    assert channel.run_remote(p.host, [code], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == "\u00e9" * 3


def _fork_main(argv):
    """Stands in for lab.cli.main in the fork tests."""
    what = argv[0]
    print(f"fork {os.getpid()} {os.getcwd()} {os.environ.get('ARONET_X')}")
    if what == "return":
        return int(argv[1])
    if what == "exit-text":
        sys.exit("fatal: told to")
    if what == "raise":
        raise ValueError("boom")
    if what == "sleep":
        time.sleep(60)
    return 0


def test_fork_mode_runs_main_in_a_child(pair, tmp_path):
    p = pair(main=_fork_main)
    out, err = io.StringIO(), io.StringIO()
    assert channel.run_remote(p.host, ["return", "7"], stdout=out, stderr=err, cwd=str(tmp_path),
                              env={"ARONET_X": "x1"}) == 7
    pid, cwd, x = out.getvalue().split()[1:]
    assert int(pid) != os.getpid() and cwd == str(tmp_path) and x == "x1"
    assert os.getcwd() != str(tmp_path) and "ARONET_X" not in os.environ  # the server is untouched

    err = io.StringIO()
    assert channel.run_remote(p.host, ["exit-text"], stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue() == "fatal: told to\n"
    err = io.StringIO()
    assert channel.run_remote(p.host, ["raise"], stdout=io.StringIO(), stderr=err) == 1
    assert "ValueError: boom" in err.getvalue()


def test_fork_mode_passes_signals_on(pair):
    p = pair(main=_fork_main)
    p.send({"id": "s", "argv": ["sleep"]})
    assert p.replies(1)[0]["out"].startswith("fork ")
    p.send({"id": "s", "cmd": "signal", "signal": int(signal.SIGINT)})
    assert p.replies(1) == [{"id": "s", "exit": 130}]  # KeyboardInterrupt, as at a terminal


def test_changed_sources_switch_to_a_fresh_process(pair):
    p = pair(main=_fork_main, command=["sh", "-c", "echo process", "sh"])
    out = io.StringIO()
    assert channel.run_remote(p.host, ["return", "0"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().startswith("fork ")
    p.server._mtimes = {**p.server._mtimes, "/somewhere/lab/edited.py": 0}  # as if a file changed
    out = io.StringIO()
    assert channel.run_remote(p.host, ["return", "0"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == "process\n"


def test_ping_and_unknown_requests(pair):
    p = pair()
    assert channel.ping(p.host, timeout=10)["pong"] is True
    p.send({"id": 7, "cmd": "what"})
    p.send({"id": 8, "argv": "--help"})
    p.send({"id": 9, "argv": [1, 2]})
    replies = p.replies(3)
    assert [r["id"] for r in replies] == [7, 8, 9]
    assert all("error" in r for r in replies)


def test_garbage_line_gets_an_error_and_the_server_carries_on(pair):
    p = pair()
    p.host.sendall(b"this is not json\n")
    [reply] = p.replies(1)
    assert reply["id"] is None and "not a protocol line" in reply["error"]
    assert channel.ping(p.host, timeout=10)["pong"]


def test_replies_of_other_requests_are_ignored(pair):
    # A client must skip what an earlier, interrupted client's command still sends.
    host, guest = socket.socketpair()
    with host, guest:
        def fake_guest():
            dec = channel.Decoder()
            req = dec.feed(guest.recv(65536))[0]
            for m in ({"id": "stale", "out": "NOT MINE\n"}, {"id": req["id"], "out": "mine\n"},
                      {"id": "stale", "exit": 9}, {"id": req["id"], "exit": 0}):
                guest.sendall(channel.encode(m))

        t = threading.Thread(target=fake_guest)
        t.start()
        out = io.StringIO()
        assert channel.run_remote(host, ["x"], stdout=out, stderr=io.StringIO()) == 0
        t.join()
    assert out.getvalue() == "mine\n"


def test_channel_closing_mid_command_is_an_error():
    host, guest = socket.socketpair()
    with host:
        def fake_guest():
            guest.recv(65536)
            guest.sendall(b'{"id": "whoever", "out": "x"}\n')
            guest.close()

        t = threading.Thread(target=fake_guest)
        t.start()
        with pytest.raises(channel.ChannelError, match="closed before the command finished"):
            channel.run_remote(host, ["x"], stdout=io.StringIO(), stderr=io.StringIO())
        t.join()


def test_signal_request_reaches_the_running_command(pair):
    p = pair(command=["sh", "-c"])
    p.send({"id": "s", "argv": ["echo started; exec sleep 60"]})
    [started] = p.replies(1)
    assert started == {"id": "s", "out": "started\n"}
    p.send({"id": "s", "cmd": "signal", "signal": int(signal.SIGINT)})
    [done] = p.replies(1)
    assert done == {"id": "s", "exit": 130}


def test_a_new_request_interrupts_an_orphaned_command(pair):
    # The guest may miss a killed client's hang-up when the next client connects
    # at once; the next request then tells it that the old command is orphaned.
    p = pair(command=["sh", "-c"])
    p.send({"id": "old", "argv": ["echo started; exec sleep 60"]})
    assert p.replies(1) == [{"id": "old", "out": "started\n"}]
    t0 = time.monotonic()
    out = io.StringIO()
    assert channel.run_remote(p.host, ["echo new"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == "new\n"  # the old command's "exit" went by, ignored
    assert time.monotonic() - t0 < vmguest.STOP_GRACE


def test_shutdown_stops_a_running_command_and_the_server(pair):
    p = pair(command=["sh", "-c"])
    p.send({"id": 1, "argv": ["echo started; exec sleep 60"]})
    assert p.replies(1) == [{"id": 1, "out": "started\n"}]
    t0 = time.monotonic()
    assert channel.shutdown(p.host, timeout=30) is True
    p.thread.join(timeout=30)
    assert p.result == "shutdown"
    assert time.monotonic() - t0 < 15


def test_host_going_away_interrupts_the_command():
    host, guest = socket.socketpair()
    marker = f"/tmp/aronet-vmserve-int-{os.getpid()}"
    server = vmguest.Server(guest.fileno(), guest.fileno(), command=["sh", "-c"])
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        host.sendall(channel.encode({"id": 1, "argv": [f"trap 'touch {marker}; exit 1' INT; "
                                                       "echo ready; while :; do sleep 0.05; done"]}))
        host.settimeout(30)
        assert next(channel.messages(host)) == {"id": 1, "out": "ready\n"}
        host.close()
        t.join(timeout=30)
        assert not t.is_alive()
        assert os.path.exists(marker)
    finally:
        guest.close()
        Path(marker).unlink(missing_ok=True)


# -- the host-side lifecycle, with a fake VM ---------------------------------
#
# The fake "vng" does what QEMU + the guest do for the channel: listen on the
# socket named in the -chardev option, and serve each connection with
# guest.Server running aronet-lab.  Everything else (detaching, vm.json, the
# ping at boot, forwarding, shutdown, killing the group) is the real code.

FAKE_VNG = textwrap.dedent(
    """
    import os, signal, socket, sys
    from lab.vm import guest
    path, mode = sys.argv[1], sys.argv[2]
    # as the real guest script does: the guest's aronet-lab runs commands itself
    os.environ["ARONET_VM_RWDIR"] = os.path.dirname(path)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "dies":
        print("fake vng: kernel panic", flush=True)
        sys.exit(1)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    print("fake vng: listening", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            how = guest.Server(conn.fileno(), conn.fileno(),
                                 command=[sys.executable, "-m", "lab.cli"]).serve()
        if how == "shutdown" and mode != "stubborn":
            break
    os.unlink(path)
    """
)


@pytest.fixture
def fake_vm(monkeypatch, tmp_path):
    script = tmp_path / "fake_vng.py"
    script.write_text(FAKE_VNG)
    mode = {"mode": "normal"}

    def fake_args(kernel, script_path, *, qemu_opts=(), **_):
        sock = next(p.split("=", 1)[1] for p in qemu_opts[0].split(",") if p.startswith("path="))
        return [sys.executable, str(script), sock, mode["mode"]]

    monkeypatch.setattr(vm.boot, "vng_args", fake_args)
    state_dir = tmp_path / "vm"
    yield state_dir, mode
    vm.stop_persistent(state_dir, timeout=5)


def _start(state_dir, **kw):
    return vm.start_persistent(state_dir, kernel="/nonexistent/vmlinuz", cached_paths=[], **kw)


def test_lifecycle_with_a_fake_vm(fake_vm, tmp_path):
    state_dir, _ = fake_vm
    assert vm.persistent_state(state_dir) is None
    state = _start(state_dir, boot_timeout=30)
    recorded = json.loads((state_dir / "vm.json").read_text())
    assert recorded["pgid"] == state["pgid"] and os.path.exists(state["socket"])
    assert os.getpgid(state["pgid"]) == state["pgid"] != os.getpgid(0)  # its own group
    assert os.getsid(state["pgid"]) != os.getsid(0)  # and session: it outlives us
    assert vm.persistent_state(state_dir)["pgid"] == state["pgid"]
    with pytest.raises(vm.VMError, match="already running"):
        _start(state_dir)

    out, err = io.StringIO(), io.StringIO()
    assert vm.forward(state_dir, ["--help"], stdout=out, stderr=err) == 0
    assert "usage: aronet-lab" in out.getvalue()
    rc = vm.forward(state_dir, ["check", "--dir", str(tmp_path / "nope")], stdout=out, stderr=err)
    assert rc != 0 and "aronet-lab:" in err.getvalue()

    assert vm.stop_persistent(state_dir) == "powered off"
    assert vm.persistent_state(state_dir) is None
    assert not vm.persistent._group_members(state["pgid"], state["tag"])
    assert not (state_dir / "vm.json").exists() and not (state_dir / "channel.sock").exists()
    assert "fake vng: listening" in (state_dir / "vm-console.log").read_text()
    assert vm.stop_persistent(state_dir) == "not running"
    with pytest.raises(vm.VMError, match="no persistent VM"):
        vm.forward(state_dir, ["--help"])


def test_a_vm_that_ignores_shutdown_is_killed(fake_vm):
    state_dir, mode = fake_vm
    mode["mode"] = "stubborn"  # ignores shutdown and SIGTERM: SIGKILL it is
    state = _start(state_dir, boot_timeout=30)
    t0 = time.monotonic()
    assert vm.stop_persistent(state_dir, timeout=1) == "killed"
    assert time.monotonic() - t0 < 20
    assert not vm.persistent._group_members(state["pgid"], state["tag"])
    assert not (state_dir / "vm.json").exists()


def test_a_vm_dying_at_boot_is_reported_with_its_console(fake_vm):
    state_dir, mode = fake_vm
    mode["mode"] = "dies"
    with pytest.raises(vm.VMError, match="exited while booting") as e:
        _start(state_dir, boot_timeout=30)
    assert "kernel panic" in e.value.output
    assert not (state_dir / "vm.json").exists()


def test_stale_state_is_not_a_running_vm(tmp_path):
    d = tmp_path / "vm"
    d.mkdir()
    # A record whose group is gone (or was reused by a process without our tag).
    (d / "vm.json").write_text(json.dumps({"pgid": os.getpgid(0), "tag": "ARONET_VM_STATE=/elsewhere",
                                           "state_dir": str(d), "socket": str(d / "channel.sock"),
                                           "console_log": str(d / "vm-console.log")}))
    assert vm.persistent_state(d) is None
    assert vm.stop_persistent(d) == "not running"  # and nothing of ours was signalled
    assert not (d / "vm.json").exists()


def test_inside_a_vm_nothing_is_forwarded(fake_vm, monkeypatch):
    state_dir, _ = fake_vm
    _start(state_dir, boot_timeout=30)
    assert vm.persistent_state(state_dir)
    monkeypatch.setenv("ARONET_VM_RWDIR", str(state_dir))  # what every guest script exports
    assert vm.persistent_state(state_dir) is None


def test_state_dir_must_fit_qemu_and_a_socket_path(tmp_path):
    with pytest.raises(vm.VMError, match="too long"):
        vm.start_persistent(tmp_path / ("x" * 120), kernel="/k", cached_paths=[])
    with pytest.raises(vm.VMError, match="must not contain"):
        vm.start_persistent(tmp_path / "a,b", kernel="/k", cached_paths=[])


def test_cancelling_a_one_shot_vm_kills_its_process_group(monkeypatch, tmp_path):
    # run_in_vm runs in a thread when the caller watches for something else (the
    # bench): Ctrl-C reaches only the main thread, which sets `cancel`.
    pids = tmp_path / "pids"
    monkeypatch.setattr(vm.boot, "vng_args", lambda *a, **k: [
        "sh", "-c", f'sleep 600 & echo $$ $! > {pids}; wait'])
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(vm.VMError, match="stopped before it finished"):
        vm.run_in_vm("true", tmp_path, kernel="/nonexistent/vmlinuz", cached_paths=[], cancel=cancel,
                     timeout=60)
    assert not processes_left(map(int, pids.read_text().split()))
