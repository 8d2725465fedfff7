"""The VM tier's two halves of one protocol (imported by conftest.py, never collected).

In the guest, `record` writes one JSON line per finished test to progress.jsonl in the
shared directory, as each test ends. On the host, `run_guest` boots the VM, runs the
selected items in it and reads those lines back as outcomes.

Because the lines are written as the tests go, a guest that dies part-way (the kernel
panicked, or QEMU died: vng exits 255 and the guest writes no exit file) still leaves
the outcomes of the tests it finished. `run_guest` then boots a fresh VM once, for the
tests that have no outcome yet, and says so. A test that kills the VM a second time
fails, with both console logs. A timeout is not retried: the budget is already spent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from pathlib import Path

PROGRESS_FILE = "progress.jsonl"
CONSOLE_TAIL_LINES = 30
VM_SECONDS_PER_TEST = 90
ATTEMPTS = 2  # a guest that dies is booted once more, for the tests it did not finish


@dataclasses.dataclass
class GuestOutcome:
    kind: str  # "passed", "failed", "skipped", "xfailed"
    message: str = ""
    details: str = ""  # guest traceback / captured output


@dataclasses.dataclass
class GuestRun:
    error: str | None = None  # set when the run left these items without an outcome
    skip_all: bool = False
    outcomes: dict[str, GuestOutcome] = dataclasses.field(default_factory=dict)  # by node id
    rwdir: Path | None = None
    console_log: Path | None = None
    console_tail: str = ""
    returncode: int | None = None
    duration: float = 0.0
    count: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "the guest died ..."


# -- guest side ----------------------------------------------------------------

_phases: dict[str, list] = {}


def record(report, out_dir: str) -> None:
    """pytest_runtest_logreport in the guest: at each test's teardown, append its
    outcome (the first failing phase wins) to out_dir/progress.jsonl."""
    _phases.setdefault(report.nodeid, []).append(report)
    if report.when != "teardown":
        return
    reports = _phases.pop(report.nodeid)
    failed = [r for r in reports if r.failed]
    skipped = [r for r in reports if r.skipped]
    if failed:
        outcome = GuestOutcome("failed", _crash_line(failed[0]), "\n\n".join(_details(r) for r in failed))
    elif skipped and hasattr(skipped[0], "wasxfail"):
        outcome = GuestOutcome("xfailed", skipped[0].wasxfail)
    elif skipped:
        longrepr = skipped[0].longrepr
        outcome = GuestOutcome("skipped", longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))
    else:
        outcome = GuestOutcome("passed")
    line = json.dumps({"nodeid": report.nodeid, **dataclasses.asdict(outcome)})
    with open(os.path.join(out_dir, PROGRESS_FILE), "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())  # the guest may die right after this test


def _crash_line(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else report.longreprtext.splitlines()[-1:][0]


def _details(report) -> str:
    captured = [f"--- guest {title} ---\n{text.rstrip()}" for title, text in report.sections
                if text.strip()]
    return "\n\n".join([f"[{report.when}] {report.longreprtext.rstrip()}", *captured])


# -- host side -----------------------------------------------------------------


def read_progress(rwdir: Path) -> dict[str, GuestOutcome]:
    """The outcomes a guest recorded; a line cut short by a dying guest is ignored."""
    outcomes = {}
    try:
        lines = (rwdir / PROGRESS_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return outcomes
    for line in lines:
        try:
            data = json.loads(line)
            nodeid = data.pop("nodeid")
            outcomes[nodeid] = GuestOutcome(**data)
        except (ValueError, TypeError, KeyError):
            continue
    return outcomes


def guest_command(nodeids: list[str], deep: bool) -> str:
    return shlex.join([
        "python", "-m", "pytest",
        "-p", "no:cacheprovider",  # the repo is read-only in the guest
        "-p", "no:hypothesispytest",  # it warns that .hypothesis/ is read-only
        "-v",
        *(["--deep"] if deep else []),
        # Node ids go into the guest script file, not the kernel command line,
        # so long selections are fine.
        *nodeids,
    ])


def run_guest(labvm, *, stack: str, nodeids: list[str], out_root: Path, cwd: Path, deep: bool,
              env: dict[str, str], say) -> GuestRun:
    """Run nodeids in one VM of `stack` (and, if that guest dies, the unfinished ones in
    a second); every outcome goes into the returned GuestRun."""
    run = GuestRun(count=len(nodeids))
    todo = list(nodeids)
    start = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suffix = "" if attempt == 1 else f"-{attempt}"
        run.rwdir = out_root / f"vm-{stack}-{stamp}-{os.getpid()}{suffix}"
        run.rwdir.mkdir(parents=True, exist_ok=True)
        run.console_log = run.rwdir / "vm-console.log"
        # a budget per test (a lab test takes one to three minutes under TCG), never less
        # than run_in_vm's default; ARONET_VM_TIMEOUT overrides it.
        timeout = float(os.environ.get("ARONET_VM_TIMEOUT",
                                       max(labvm.DEFAULT_TIMEOUT, VM_SECONDS_PER_TEST * len(todo))))
        say(f"\n[vm] booting the VM ({stack}) for {len(todo)} test(s); console: {run.console_log}")
        error = run.error = None
        try:
            result = labvm.run_in_vm(
                guest_command(todo, deep), run.rwdir, timeout=timeout,
                env={**env, "ARONET_VM_OUT": str(run.rwdir)},
                log_path=run.console_log, cwd=cwd, stack=stack,
            )
            run.returncode = result.returncode
            run.console_tail = labvm.tail(labvm.command_output(result.stdout), CONSOLE_TAIL_LINES)
        except labvm.VMError as e:
            error = e
            run.console_tail = labvm.tail(e.output, CONSOLE_TAIL_LINES)
        run.outcomes.update(read_progress(run.rwdir))
        todo = [n for n in todo if n not in run.outcomes]
        if error is None:
            if todo:
                run.error = (f"guest pytest (exit {run.returncode}) recorded no outcome for "
                             f"{len(todo)} test(s)")
            break
        run.error = str(error)
        if not todo or isinstance(error, labvm.VMTimeout) or attempt == ATTEMPTS:
            break
        note = (f"the {stack} guest died during {todo[0]} ({error}); booting a fresh VM "
                f"once for the {len(todo)} test(s) it did not finish")
        run.notes.append(note)
        say(f"[vm] {note}")
    run.duration = time.monotonic() - start
    say(f"[vm] guest ({stack}) finished in {run.duration:.1f} s (pytest exit {run.returncode})")
    return run
