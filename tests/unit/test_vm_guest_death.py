"""The VM tier's outcome protocol (tests/vm/vmhost.py): outcomes recorded test by test
in the guest survive a guest that dies, and the unfinished tests get one more VM."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
import vmhost


class VMError(RuntimeError):
    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


class VMTimeout(VMError):
    pass


class FakeLabVM:
    """Stands in for lab.vm: each boot "runs" some of the tests (writes their lines
    with vmhost's own format), then either finishes or dies like vng exit 255."""

    DEFAULT_TIMEOUT = 60.0
    VMError, VMTimeout = VMError, VMTimeout

    def __init__(self, boots):
        self.boots = list(boots)  # per boot: (tests it finishes, exception or None)
        self.commands = []

    def run_in_vm(self, command, rwdir, **_):
        self.commands.append(command)
        finished, error = self.boots.pop(0)
        for nodeid in finished:
            line = vmhost.json.dumps({"nodeid": nodeid, "kind": "passed", "message": "", "details": ""})
            with open(Path(rwdir) / vmhost.PROGRESS_FILE, "a") as f:
                f.write(line + "\n")
        if error:
            with open(Path(rwdir) / vmhost.PROGRESS_FILE, "a") as f:
                f.write('{"nodeid": "cut sho')  # the line a dying guest was writing
            raise error
        return subprocess.CompletedProcess([], 0, stdout="")

    def tail(self, text, n):
        return text

    def command_output(self, text):
        return text


def _run(tmp_path, labvm, nodeids):
    said = []
    run = vmhost.run_guest(labvm, stack="debian13", nodeids=nodeids, out_root=tmp_path, cwd=tmp_path,
                           deep=False, env={}, say=said.append)
    return run, said


def test_a_guest_that_dies_is_booted_once_more_for_the_tests_it_did_not_finish(tmp_path):
    labvm = FakeLabVM([(["t::a"], VMError("vng exit code 255")), (["t::b", "t::c"], None)])
    run, said = _run(tmp_path, labvm, ["t::a", "t::b", "t::c"])
    assert run.error is None
    assert {n: o.kind for n, o in run.outcomes.items()} == {"t::a": "passed", "t::b": "passed",
                                                           "t::c": "passed"}
    assert "t::a" not in labvm.commands[1] and "t::b" in labvm.commands[1]
    assert any("died during t::b" in line for line in said), said
    assert run.notes and "2 test(s)" in run.notes[0]


def test_a_test_that_kills_the_guest_twice_fails_without_a_third_boot(tmp_path):
    death = VMError("vng exit code 255")
    labvm = FakeLabVM([(["t::a"], death), ([], death)])
    run, _ = _run(tmp_path, labvm, ["t::a", "t::b"])
    assert len(labvm.commands) == 2
    assert run.error == "vng exit code 255"
    assert set(run.outcomes) == {"t::a"}


def test_a_timeout_is_not_retried(tmp_path):
    labvm = FakeLabVM([([], VMTimeout("did not finish within 60 s"))])
    run, _ = _run(tmp_path, labvm, ["t::a"])
    assert len(labvm.commands) == 1 and "60 s" in run.error


@pytest.fixture
def guest_outcomes(tmp_path):
    """Runs a small pytest session as the guest does (its conftest calls vmhost.record)
    and returns what the host reads back."""

    def run(test_source: str):
        (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(Path(vmhost.__file__).parent)!r})
            import vmhost
            def pytest_runtest_logreport(report):
                vmhost.record(report, {str(tmp_path)!r})
        """))
        (tmp_path / "test_guest.py").write_text(textwrap.dedent(test_source))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       cwd=tmp_path, capture_output=True, check=False)
        return {n.split("::")[-1]: o for n, o in vmhost.read_progress(tmp_path).items()}

    return run


def test_the_guest_records_every_kind_of_outcome_with_its_reason(guest_outcomes):
    out = guest_outcomes("""
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown broke")

        def test_ok():
            pass

        def test_bad():
            print("guest said this")
            assert 1 == 2

        def test_skip():
            pytest.skip("no seg6 here")

        @pytest.mark.xfail(reason="known")
        def test_xf():
            assert False

        def test_teardown(broken_teardown):
            pass
    """)
    assert out["test_ok"].kind == "passed"
    assert out["test_bad"].kind == "failed" and "assert 1 == 2" in out["test_bad"].message
    assert "guest said this" in out["test_bad"].details
    assert out["test_skip"].kind == "skipped" and out["test_skip"].message == "Skipped: no seg6 here"
    assert out["test_xf"].kind == "xfailed" and out["test_xf"].message == "known"
    assert out["test_teardown"].kind == "failed" and "teardown broke" in out["test_teardown"].details
