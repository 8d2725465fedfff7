"""The event stream: `{"cmd": "events"}` on the control socket keeps the connection
open and sends one JSON object per line per state change (aronet/core/events.py
lists them), until the client closes it or the agent stops.

Publishing is cheap and thread-safe: with no subscriber it does nothing; otherwise
the event is stamped once and put into every subscriber's queue on the event loop.
Each queue is bounded (QUEUE_LIMIT): a subscriber that reads too slowly loses the
newest events instead of growing the agent's memory, and is told how many with a
"lost" event as soon as it reads again. At most MAX_SUBSCRIBERS streams at once.
A subscriber may ask how often babel is observed while it listens ("poll", seconds,
within POLL_RANGE); the watcher (telemetry.py) observes at the fastest asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable

from ..core.events import stamp

log = logging.getLogger("aronet")

QUEUE_LIMIT = 1024
MAX_SUBSCRIBERS = 16
POLL_RANGE = (0.2, 60.0)
DEFAULT_POLL = 1.0


class Subscriber:
    def __init__(self, poll: float, limit: int = QUEUE_LIMIT,
                 mark: Callable[[dict], dict] = lambda e: e):
        self.poll, self.mark = poll, mark
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=limit)
        self.lost = 0  # dropped since the last "lost" event was queued

    def put(self, event: dict) -> None:
        """On the event loop. A "lost" event goes where the loss was, once there is room."""
        if self.lost and self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(self.lost_event())
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost += 1

    def lost_event(self) -> dict:
        lost, self.lost = self.lost, 0
        return self.mark({"event": "lost", "count": lost})


class EventBus:
    def __init__(self, node: str, clock: Callable[[], float] = time.time, limit: int = QUEUE_LIMIT):
        self.node, self.clock, self.limit = node, clock, limit
        self.subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.on_subscribe: Callable[[], None] = lambda: None  # the watcher re-reads its period

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._loop_thread = loop, threading.get_ident()

    @property
    def poll(self) -> float | None:
        """The fastest observation any subscriber asked for (None: no subscriber)."""
        return min((s.poll for s in self.subscribers), default=None)

    def publish(self, event: dict) -> None:
        """From any thread."""
        if not self.subscribers or self._loop is None:
            return
        stamped = stamp(event, self.node, self.clock())
        if threading.get_ident() == self._loop_thread:
            self._deliver(stamped)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._deliver, stamped)

    def _deliver(self, event: dict) -> None:
        for s in list(self.subscribers):
            s.put(event)

    def subscribe(self, poll: float) -> Subscriber:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise ValueError(f"{MAX_SUBSCRIBERS} event streams are open already")
        s = Subscriber(poll, self.limit, lambda e: stamp(e, self.node, self.clock()))
        self.subscribers.add(s)
        self.on_subscribe()
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)
        self.on_subscribe()

    async def stream(self, request: dict, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """Serve one subscriber until it closes the connection."""
        poll = request.get("poll", DEFAULT_POLL)
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or \
                not POLL_RANGE[0] <= poll <= POLL_RANGE[1]:
            raise ValueError(f"poll must be a number of seconds from {POLL_RANGE[0]:g} to "
                             f"{POLL_RANGE[1]:g}, not {poll!r}")
        sub = self.subscribe(float(poll))
        closed = asyncio.ensure_future(reader.read(1))  # the client sends nothing more: EOF
        try:
            await _send(writer, stamp({"event": "subscribed", "poll": float(poll)}, self.node,
                                      self.clock()))
            while not closed.done():
                got = asyncio.ensure_future(sub.queue.get())
                await asyncio.wait({got, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    break
                await _send(writer, got.result())
                if sub.lost and sub.queue.empty():  # no newer event to put it before
                    await _send(writer, sub.lost_event())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.cancel()
            self.unsubscribe(sub)


async def _send(writer: asyncio.StreamWriter, event: dict) -> None:
    writer.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    await writer.drain()
