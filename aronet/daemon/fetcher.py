"""The agent's registry source (config.json registry.source): every fetch_interval
it fetches the registry and its .sig from a URL (conditional requests; see
aronet.adapters.http) or reads them from a path, and loads them when they changed,
through the same gate as `aronet load`. A failed fetch, an empty or partial
download, or a refused registry changes nothing: it is logged, the status shows
it, and the next round tries again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..adapters import http
from ..errors import AronetError, InputError
from ..load import Signed, read_signed
from ..model import RegistryPolicy
from ..trust.statement import format_time

log = logging.getLogger("aronet")


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


class Fetcher:
    def __init__(self, policy: RegistryPolicy, load: Callable[[Signed], Awaitable[dict]],
                 report: Callable[[str], None]):
        self.policy, self.load, self.report = policy, load, report
        self.cache = http.Pair()
        self.last: tuple[str, str | None] | None = None  # what was read from a path last time

    async def once(self) -> str:
        """One round: what happened, in a line."""
        src = self.policy.source
        if is_url(src):
            pair, changed = await asyncio.to_thread(http.get_pair, src, self.cache,
                                                    signed=self.policy.checks,
                                                    timeout=self.policy.fetch_timeout)
            self.cache = pair  # what the server has now, accepted or not
            if not changed:
                return "unchanged"
            sig = pair.signature.body
            signed = Signed(src, http.text(pair.registry.body, src), src + ".sig",
                            None if sig is None else http.text(sig, src + ".sig"))
        else:
            signed = await asyncio.to_thread(read_signed, src)
            if (signed.text, signed.sig_text) == self.last:
                return "unchanged"
            self.last = (signed.text, signed.sig_text)
        reply = await self.load(signed)
        serial = (reply.get("registry") or {}).get("serial")
        return f"loaded ({reply['nodes']} nodes, serial {serial}, {len(reply['changes'])} changes)"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                what = await self.once()
            except InputError as e:
                what = "refused: " + "; ".join(str(p) for p in e.problems)
                log.error("registry fetch from %s %s", self.policy.source, what)
            except AronetError as e:
                what = f"failed: {e}"
                log.error("registry fetch %s", what)
            else:
                if what != "unchanged":
                    log.info("registry fetch from %s: %s", self.policy.source, what)
            self.report(f"{format_time(time.time())} {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.fetch_interval)
