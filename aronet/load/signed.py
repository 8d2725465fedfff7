"""Reading a registry with its detached signature: the exact text of registry.json
(what the statement's sha256 covers) and of registry.json.sig, if there is one.
Both go through the one bounded reader (files.read_text); aronet.trust checks them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .files import REGISTRY_LIMIT, read_text

SIGNATURE_LIMIT = REGISTRY_LIMIT  # a statement may revoke many keys and nodes


def signature_path(registry_path: str) -> str:
    return registry_path + ".sig"


@dataclass(frozen=True)
class Signed:
    file: str
    text: str  # registry.json exactly as read (UTF-8: text.encode() gives its bytes back)
    sig_file: str
    sig_text: str | None  # None: there is no .sig

    @property
    def data(self) -> bytes:
        return self.text.encode()


def read_signed(path: str, sig_path: str | None = None) -> Signed:
    """The registry at path and its .sig (sig_path, default path + ".sig"); a .sig
    that does not exist is None, one that cannot be read an InputError."""
    sig_path = sig_path or signature_path(path)
    text = read_text(path, REGISTRY_LIMIT)
    sig = read_text(sig_path, SIGNATURE_LIMIT) if os.path.lexists(sig_path) else None
    return Signed(path, text, sig_path, sig)
