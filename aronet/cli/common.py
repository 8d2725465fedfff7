"""What several command groups share: finding a running agent's control socket,
and writing a file atomically.

Every module of aronet.cli imports at its top only what building the parser needs;
a command imports the rest (the loader, jsonschema, cryptography, the adapters) in
its own function, so `aronet --help`, `status`, `events` and `metrics` start without
them (tests/unit/test_cli_imports.py)."""

from __future__ import annotations

import os

from ..errors import AronetError


def agent_socket(args) -> str:
    from ..model import Settings
    from ..paths import Paths

    if args.socket:
        return args.socket
    if args.config:
        from ..load import load_config

        return Paths.for_instance(load_config(args.config).settings.ifname, args.runtime_dir).control_socket
    return Paths.for_instance(Settings().ifname, args.runtime_dir).control_socket


def where(sp) -> None:
    """The options that say which agent a command talks to."""
    sp.add_argument("-s", "--socket", help="the agent's control socket")
    sp.add_argument("-c", "--config", help="find the agent's socket from its config")
    sp.add_argument("--runtime-dir", help="the agent's runtime directory")


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Through a temporary file and a rename: a reader sees the old file or the new."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise AronetError(f"{path}: cannot write: {e.strerror}") from None
