"""The agent's memory: the collection after every re-check, and the `memory` command
(aronet/daemon/memory.py)."""

import asyncio
import gc
import tracemalloc
import weakref
from types import SimpleNamespace

import pytest

from aronet.daemon import memory


@pytest.fixture
def no_tracing():
    was = tracemalloc.is_tracing()
    yield
    if not was:
        tracemalloc.stop()


def test_usage_splits_the_process_memory():
    u = memory.handle({})["usage"]
    assert u["rss_kb"]["VmRSS"] > 0 and u["rss_kb"]["RssAnon"] > 0
    assert u["python_blocks"] > 0 and u["gc"]["full_collections"] >= 0
    assert u["threads"] >= 1 and u["fds"] >= 3
    m = u["malloc_kb"]
    assert m is not None and m["in_use"] > 0 and m["heap"] >= m["in_use"]
    a = u["anon_kb"]
    assert a["heap"] + a["thread_stacks"] + a["other"] > 0  # some of RssAnon, by mapping
    assert "traced_kb" not in u or u["tracing"]


def test_top_lists_what_was_allocated_since_tracing_started(no_tracing):
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already runs in this process")
    assert memory.handle({"top": 5}).get("top") == []  # not tracing: nothing to list
    memory.handle({"trace": 3})
    kept = [bytearray(1000) for _ in range(2000)]  # about 2 MB, from this line
    reply = memory.handle({"top": 3})
    assert reply["usage"]["tracing"] and reply["usage"]["traced_kb"]["current"] >= 1900
    first = reply["top"][0]
    assert first["kb"] >= 1900 and first["blocks"] >= 2000
    assert any(w.startswith(f"{__file__}:") for w in first["where"])
    del kept


def test_release_reports_rss_before_and_after():
    r = memory.handle({"release": True})["release"]
    assert r["collected"] >= 0
    assert r["before_kb"]["VmRSS"] > 0 and r["after_kb"]["VmRSS"] > 0


class _Node:
    pass


def test_the_watch_loop_frees_what_a_recheck_left_in_cycles(tmp_path, monkeypatch):
    """With the collector's own thresholds out of the way (gc.disable), only the watch
    loop's collection can free a cycle that a re-check dropped."""
    from aronet.daemon import agent as agent_mod
    from aronet.daemon.links import LinkFollower

    agent = agent_mod.Agent.__new__(agent_mod.Agent)
    agent._stop = asyncio.Event()
    agent.rt = agent_mod.Runtime(registry=None)
    agent.children = {}  # no charon: the tunnel links are not followed
    agent.links = LinkFollower(None, None, "", desired=lambda: None, charon_ready=lambda: False)
    agent.trust = SimpleNamespace(tick=lambda registry: registry)  # unsigned: nothing expires
    dropped = []

    async def resync(registry=None, recheck=False):
        cycle = _Node()
        cycle.me = cycle  # unreachable once resync returns; refcounting cannot free it
        dropped.append(weakref.ref(cycle))
        if len(dropped) == 2:
            agent._stop.set()
        return {}

    agent.resync = resync
    monkeypatch.setattr(agent_mod, "RECHECK_INTERVAL", 0.01)
    was = gc.isenabled()
    gc.disable()
    try:
        before = memory.usage()["gc"]["agent_collections"]["runs"]
        asyncio.run(agent._watch())
        assert [r() for r in dropped] == [None, None]
        assert memory.usage()["gc"]["agent_collections"]["runs"] == before + 2
    finally:
        if was:
            gc.enable()


def test_settle_puts_what_is_alive_out_of_the_collectors_sight_and_bounds_the_arenas():
    try:
        memory.settle()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert memory.usage()["malloc_kb"]["arena_max"] == memory.ARENAS  # glibc, as on Debian
