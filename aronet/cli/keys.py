"""`aronet key generate | public`: the organization's Ed25519 key."""

from __future__ import annotations

import os
import sys

from ..errors import AronetError, InputError, Problem


def new_key(path: str, force: bool):
    """A new Ed25519 key, written to path as the agent reads it (keys.write_private)."""
    from .. import keys

    key = keys.generate()
    try:
        keys.write_private(path, key, force=force)
    except FileExistsError:
        raise InputError(Problem(path, "$", "already exists; pass --force to overwrite")) from None
    except OSError as e:
        raise AronetError(f"{path}: cannot write: {e.strerror}") from None
    return key


def key_generate(args) -> int:
    from .. import keys

    sys.stdout.write(keys.public_pem(new_key(args.path, args.force)))
    return 0


def key_public(args) -> int:
    from .. import keys

    try:
        pem = keys.read_private(args.path, os.getcwd())
        sys.stdout.write(keys.public_pem(keys.parse_private(pem)))
    except keys.KeyProblem as e:
        raise InputError(Problem(args.path, "$", str(e))) from None
    return 0


def add(sub) -> None:
    key = sub.add_parser("key", help="Ed25519 keys").add_subparsers(dest="sub", required=True)
    g = key.add_parser("generate", help="write a new private key (mode 0600), print its public key")
    g.add_argument("path")
    g.add_argument("--force", action="store_true", help="overwrite an existing file")
    g.set_defaults(func=key_generate)
    pub = key.add_parser("public", help="print the public key of a private key file")
    pub.add_argument("path")
    pub.set_defaults(func=key_public)
