"""The agent's own files on disk: write a generated file atomically (the routing
daemons' configs, strongSwan's, the pid file, the saved registry), and make the
runtime and state directories private to the agent's user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

from ..errors import AronetError


def write_atomic(path: str, text: str, mode: int = 0o644) -> bool:
    """Write text to path through a temporary file and a rename. Returns False (and
    writes nothing) when the file already holds exactly that text.

    The temporary file has a new random name in the same directory and is created
    with O_EXCL (a file or symlink already there is never followed nor reused). It
    gets its final mode through the descriptor, is fsynced, then renamed over path;
    on any error it is removed and path is left as it was."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def ensure_private_dir(path: str) -> None:
    """Create path (and its parents) if missing, and make it mode 0700. An existing
    directory keeps its mode under os.makedirs, so it is chmodded here; one that is
    not owned by the agent's user, or is a symbolic link, is refused (AronetError)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            raise AronetError(f"{path} is a symbolic link; give the agent the real "
                              "directory") from None
        raise AronetError(f"cannot create the directory {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise AronetError(
                f"{path} is owned by uid {st.st_uid}, not by the agent's user (uid "
                f"{os.geteuid()}); remove it or run: chown {os.geteuid()} {path}")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
