"""`aronet key generate | public`: the organization's Ed25519 key."""

from __future__ import annotations

import os
import sys

from .. import keys
from ..errors import AronetError, InputError, Problem


def key_generate(args) -> int:
    key = keys.generate()
    try:
        keys.write_private(args.path, key, force=args.force)
    except FileExistsError:
        raise InputError(Problem(args.path, "$", "already exists; pass --force to overwrite")) from None
    except OSError as e:
        raise AronetError(f"{args.path}: cannot write: {e.strerror}") from None
    sys.stdout.write(keys.public_pem(key))
    return 0


def key_public(args) -> int:
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
