"""The VM tier: tests that need kernel features the host kernel lacks.

The tests in this directory are ordinary pytest tests, but they only mean
something on a kernel with VRF, kernel ESP and XFRM interfaces.  So this file
plays two roles, chosen by ARONET_VM_GUEST:

* on the host (unset): every item here gets the `vm` marker and no fixture or
  body runs on the host.  The first vm item that runs boots one microVM
  (lab/vm/) for the whole session and runs *all* selected vm items inside it
  with pytest, which records each outcome in a shared directory (vmhost.py).  Each host item then
  reports the outcome of its guest twin.  If no VM can be booted, the items
  fail with the reason (ARONET_SKIP_VM=1 turns that into skips).
* in the guest (ARONET_VM_GUEST=1): the tests simply run, with the fixtures
  below.  Setting it on a host that does have those features runs the tier
  natively.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import vmhost  # this directory is on sys.path (rootdir conftest, no __init__.py)

GUEST = os.environ.get("ARONET_VM_GUEST") == "1"
VM_DIR = Path(__file__).resolve().parent


# The stacks (lab/vm/roots.py) a run proves things on: each VM test runs on those of
# its `stacks` marker (default: debian12 only) that are enabled here, as one item per
# stack whose id names it (test_x[debian13]); each stack's items share one VM boot.
STACKS = tuple(s for s in os.environ.get("ARONET_VM_STACKS", "debian12,debian13").split(",") if s)
DEFAULT_STACKS = ("debian12",)


def _is_vm_item(item) -> bool:
    return VM_DIR in Path(item.path).resolve().parents


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml declares it too; repeated here so the tier stands alone.
    config.addinivalue_line("markers", "vm: runs inside the microVM (stock Debian kernel)")
    config.addinivalue_line("markers", "stacks(*names): the stacks a VM test runs on "
                            "(lab/vm/roots.py; default debian12)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_vm_item(metafunc.definition):
        return
    marker = metafunc.definition.get_closest_marker("stacks")
    wanted = marker.args if marker else DEFAULT_STACKS
    metafunc.parametrize("vm_stack", [s for s in wanted if s in STACKS])


@pytest.fixture(autouse=True)
def vm_stack() -> str:
    """The stack this item proves its test on (parametrized: pytest_generate_tests)."""
    return os.environ.get("ARONET_VM_STACK", DEFAULT_STACKS[0])


def _stack_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("vm_stack", DEFAULT_STACKS[0]) if callspec else DEFAULT_STACKS[0]


def _skip_host_setup() -> None:
    """Replaces Function.setup on the host: the fixtures belong to the guest."""


@pytest.hookimpl(tryfirst=True)  # before -m deselection, so `-m "not vm"` works
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not _is_vm_item(item):
            continue
        item.add_marker(pytest.mark.vm)
        if not GUEST and isinstance(item, pytest.Function):
            # Guest fixtures (namespaces, VRFs, ...) would fail or do damage on
            # the host kernel; skipping fixture setup keeps the host item a
            # pure proxy whatever fixtures a test asks for.
            item.setup = _skip_host_setup


# --------------------------------------------------------------------------
# host side: one VM run per session, outcomes read back from JUnit XML


_RUN_KEY = pytest.StashKey[dict]()  # stack -> vmhost.GuestRun


def _say(config: pytest.Config, line: str) -> None:
    # Boot happens inside the first test's call phase; without this the
    # session just seems to hang for a minute.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with ctx:
        reporter.write_line(line)


def _import_labvm():
    try:
        from lab import vm
    except ImportError:  # not installed editable: fall back to the checkout
        sys.path.insert(0, str(VM_DIR.parent.parent))
        from lab import vm
    return vm


def _run_guest(session: pytest.Session, stack: str) -> vmhost.GuestRun:
    config = session.config
    labvm = _import_labvm()
    reason = labvm.available(stack)
    if reason:
        return vmhost.GuestRun(error=f"VM ({stack}) not available: {reason}",
                               skip_all=os.environ.get("ARONET_SKIP_VM") == "1")
    deep = config.getoption("--deep")
    nodeids = [i.nodeid for i in session.items if _is_vm_item(i) and _stack_of(i) == stack
               and (deep or not i.get_closest_marker("deep"))]
    return vmhost.run_guest(
        labvm, stack=stack, nodeids=nodeids, out_root=Path(config.rootpath) / "out",
        cwd=config.rootpath, deep=deep, say=lambda line: _say(config, line),
        env={"ARONET_VM_GUEST": "1", "ARONET_VM_STACK": stack, "ARONET_VM_STACKS": ",".join(STACKS)},
    )


def _guest_run(session: pytest.Session, stack: str) -> vmhost.GuestRun:
    runs = session.config.stash.setdefault(_RUN_KEY, {})
    if stack not in runs:
        runs[stack] = _run_guest(session, stack)
    return runs[stack]


def _with_console(run: vmhost.GuestRun, text: str) -> str:
    parts = [text]
    if run.console_tail:
        parts.append(f"--- tail of the guest console ---\n{run.console_tail}")
    if run.console_log and str(run.console_log) not in text:
        parts.append(f"console log: {run.console_log}")
    return "\n\n".join(parts)


def _skip_at_item(reason: str) -> None:
    try:
        pytest.skip(reason)
    except pytest.skip.Exception as e:
        e._use_item_location = True  # report at the test, not at this hook
        raise


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if GUEST or not _is_vm_item(pyfuncitem):
        return None
    run = _guest_run(pyfuncitem.session, _stack_of(pyfuncitem))
    outcome = run.outcomes.get(pyfuncitem.nodeid)
    if outcome is None:
        problem = run.error or f"the guest did not report this test (guest pytest exit {run.returncode})"
        if run.skip_all:
            _skip_at_item(f"{problem} (ARONET_SKIP_VM=1)")
        pytest.fail(_with_console(run, problem), pytrace=False)
    if outcome.kind == "failed":
        # The guest's own traceback and captured output say what went wrong;
        # the console tail is printed once in the terminal summary instead.
        pytest.fail(
            f"[in the VM] {outcome.message}\n\n{outcome.details}\n\nconsole log: {run.console_log}",
            pytrace=False,
        )
    if outcome.kind == "skipped":
        _skip_at_item(f"[in the VM] {outcome.message}")
    if outcome.kind == "xfailed":
        pytest.xfail(f"[in the VM] {outcome.message}")
    return True  # passed in the guest; the body must not run on the host


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if GUEST:
        return
    for stack, run in config.stash.get(_RUN_KEY, {}).items():
        _summary(terminalreporter, stack, run)


def _summary(terminalreporter, stack: str, run: vmhost.GuestRun) -> None:
    terminalreporter.write_sep("-", f"VM tier, {stack}")
    for note in run.notes:
        terminalreporter.write_line(f"note: {note}")
    if run.error:
        terminalreporter.write_line(f"VM run failed: {run.error}")
    else:
        terminalreporter.write_line(
            f"{run.count} test(s) in the VM ({stack}), {run.duration:.1f} s wall clock "
            f"(guest pytest exit {run.returncode})"
        )
    failed = run.error or any(o.kind == "failed" for o in run.outcomes.values())
    if run.rwdir and failed:
        if run.console_tail and not run.error:  # with run.error, every item shows it
            terminalreporter.write_line(f"tail of the guest console:\n{run.console_tail}")
        terminalreporter.write_line(f"console log: {run.console_log}")
        terminalreporter.write_line(f"outcomes:    {run.rwdir / vmhost.PROGRESS_FILE}")


# --------------------------------------------------------------------------
# guest side fixtures


@pytest.fixture
def netns():
    """Factory: netns(prefix) -> name of a fresh, uniquely named namespace.

    Every namespace made is removed after the test, failed or not.  Close
    any IPRoute(netns=...) you open first (use `with`), or the namespace
    and its devices outlive the test.
    """
    from pyroute2 import netns as pr_netns

    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        pr_netns.create(name)
        created.append(name)
        return name

    yield make
    for name in reversed(created):
        with contextlib.suppress(OSError):
            pr_netns.remove(name)


def pytest_runtest_logreport(report) -> None:
    out = os.environ.get("ARONET_VM_OUT")
    if GUEST and out:
        vmhost.record(report, out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Lets a guest fixture see its test's outcome (rep_setup / rep_call), e.g. to keep
    logs only when the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


EXAMPLES = Path(__file__).resolve().parents[2] / "lab" / "examples"
LAB_TIMEOUT = 240.0


def _keep_lab_logs(lab, test_name: str) -> None:
    """Copy a lab's agent logs to the shared directory, where the host finds them."""
    out = os.environ.get("ARONET_VM_OUT")
    if not out:
        return
    dest = os.path.join(out, test_name)
    os.makedirs(dest, exist_ok=True)
    for n in lab.plan.nodes:
        if os.path.exists(lab.log(n.name)):
            shutil.copy(lab.log(n.name), os.path.join(dest, f"{lab.plan.lab}-{n.name}.log"))


@pytest.fixture(scope="session")
def keep_lab_logs():
    return _keep_lab_logs


def _take_down(lab, test_name: str) -> None:
    """Stop the agents first (so the kept logs include their stop), keep the logs,
    then take the lab down and prove nothing is left."""
    from lab import run as labrun

    labrun.stop_agents(lab)
    _keep_lab_logs(lab, test_name)
    assert labrun.down(lab, say=lambda *_: None) == []


@pytest.fixture
def lab_up(request):
    """Factory: lab_up(topology, name, mode) -> (lab, report of `up`). Every lab it
    started is taken down after the test, whatever the outcome."""
    from lab import run as labrun

    labs = []

    def start(topology: str, name: str, mode: str | None = None):
        lab = labrun.open_lab(str(EXAMPLES / topology), name=name, mode=mode)
        labs.append(lab)
        return lab, labrun.up(lab, LAB_TIMEOUT, say=lambda *_: None)

    yield start
    for lab in labs:
        _take_down(lab, request.node.name)


@pytest.fixture(scope="session")
def running_lab():
    """For module fixtures: `with running_lab(topology, name, mode) as lab:` yields a
    lab whose checks all passed, and takes it down afterwards."""

    @contextlib.contextmanager
    def run(topology: str, name: str, mode: str | None = None):
        from lab import run as labrun

        lab = labrun.open_lab(str(EXAMPLES / topology), name=name, mode=mode)
        report = labrun.up(lab, LAB_TIMEOUT, say=lambda *_: None)
        try:
            assert report.ok, report.as_text()
            yield lab
        finally:
            _take_down(lab, name)

    return run
