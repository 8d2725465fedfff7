"""Run child daemons under asyncio: start, log their output with a prefix, restart
with backoff when they die, and stop them.

Children die with the agent: PR_SET_PDEATHSIG is set in the child before exec and
survives the exec chain (unshare and nsenter exec in place). Each child carries the
instance tag in its environment and has a pid file, so an agent that was killed can
find exactly its own orphans next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from ..adapters.proc import tagged_processes

log = logging.getLogger("aronet")

PR_SET_PDEATHSIG = 1
BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 0.5, 10.0, 30.0


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], pid_file: str,
                 on_start: Callable[[], Awaitable[None]] | None = None,
                 prepare: Callable[[], None] | None = None,
                 on_exit: Callable[[str, int | None, int], None] | None = None):
        """on_exit(name, exit status or None, restarts): it died (or could not start)
        and is about to be restarted; not called for a stop or a requested restart."""
        self.name, self.argv, self.env, self.pid_file = name, argv, env, pid_file
        self.on_start, self.prepare, self.on_exit = on_start, prepare, on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._restart = False
        self.ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping:
            self.started_at = time.monotonic()
            code = None
            try:
                if self.prepare is not None:
                    self.prepare()
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    preexec_fn=_die_with_parent)
            except OSError as e:
                log.error("%s: cannot start %s: %s", self.name, self.argv[0], e)
            else:
                _write_pid(self.pid_file, self.proc.pid)
                log.info("%s: started, pid %d", self.name, self.proc.pid)
                pump = asyncio.get_running_loop().create_task(self._pump())
                if self.on_start is not None:
                    try:
                        await self.on_start()
                        self.ready.set()
                    except Exception as e:  # logged, then the child is restarted
                        log.error("%s: setting up after start failed: %s", self.name, e)
                        self.proc.terminate()
                else:
                    self.ready.set()
                code = await self.proc.wait()
                await pump
                self.ready.clear()
                if self._stopping:
                    break
                if self._restart:
                    self._restart = False
                    log.info("%s: stopped for a restart (status %s); starting again", self.name, code)
                    continue
                log.warning("%s: exited with status %s", self.name, code)
            if time.monotonic() - self.started_at > STABLE_AFTER:
                backoff = BACKOFF_START
            self.restarts += 1
            if self.on_exit is not None:
                self.on_exit(self.name, code, self.restarts)
            log.info("%s: restarting in %.1f s", self.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        _remove(self.pid_file)

    async def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("[%s] %s", self.name, line)

    def restart(self) -> None:
        """Stop the running process; the supervision loop starts it again at once
        (not counted as a crash)."""
        if self.proc and self.proc.returncode is None:
            self._restart = True
            self.proc.terminate()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                log.warning("%s: did not stop in %.0f s; killing", self.name, timeout)
                self.proc.kill()
                await self.proc.wait()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        _remove(self.pid_file)


def _write_pid(path: str, pid: int) -> None:
    with open(path, "w") as f:
        f.write(f"{pid}\n")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def kill_orphans(tag: str, pid_files: list[str], timeout: float = 5.0) -> list[int]:
    """Stop processes an earlier agent of this instance left: any carrying the tag
    (a pid file alone is not trusted: the pid may have been reused)."""
    for path in pid_files:
        _remove(path)
    pids = set(tagged_processes(tag))
    found = sorted(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if os.path.exists(f"/proc/{p}")}
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found
