"""Fixtures for unit tests. The builders live in builders.py (importable as
`builders` from any test in this directory) so other tests can call them directly."""

from __future__ import annotations

import pytest
from builders import KeyPair, World, build_world, key_pair


@pytest.fixture
def world(tmp_path) -> World:
    """The 4-node, 2-organization example written under tmp_path (see builders)."""
    return build_world(tmp_path)


@pytest.fixture
def pair() -> KeyPair:
    """A fresh Ed25519 key pair."""
    return key_pair()


@pytest.fixture
def other_pair() -> KeyPair:
    return key_pair()
