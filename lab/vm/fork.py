"""A fork of this process that runs a function, as a subprocess would run a program.

The guest server (lab/vm/guest.py) imports its entry point once and runs each
request in a fork, which costs milliseconds where a fresh interpreter costs
seconds under TCG.  Forked offers the subset of subprocess.Popen the server
uses: stdout/stderr pipes, wait() and send_signal().
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any


class Forked:
    """A fork of this process running main(argv); the subset of Popen the server uses."""

    def __init__(self, main: Callable[[list[str]], int], argv: list[str], *, prog: str, cwd: str | None,
                 env: dict[str, str], close: tuple[int, ...] = ()):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code: Any = 1
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                for fd in {devnull, out_r, out_w, err_r, err_w, *close} - {0, 1, 2}:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if cwd:
                    os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                sys.argv = [prog, *argv]
                code = main(argv)
            except SystemExit as e:
                code = e.code
            except KeyboardInterrupt:
                code = 130
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                if code is None:
                    code = 0
                elif not isinstance(code, int):
                    with contextlib.suppress(Exception):
                        print(code, file=sys.stderr)
                    code = 1
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code & 0xFF)
        os.close(out_w)
        os.close(err_w)
        self.pid = pid
        self.stdout = open(out_r, "rb")  # noqa: SIM115
        self.stderr = open(err_r, "rb")  # noqa: SIM115
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)
