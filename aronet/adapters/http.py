"""Fetching a registry and its .sig over HTTP(S) with urllib: conditional requests
(ETag / If-Modified-Since), a timeout, a size limit, and no partial body ever
passed on. Verifying what was fetched is the caller's job (aronet.trust), before
it replaces anything.

A registry and its signature change independently (re-signing to extend the expiry
leaves registry.json as it was), so each URL keeps its own validators. A redirect
may not change the scheme: https never becomes http behind the user's back.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace

from .. import __version__
from ..errors import AronetError
from ..load.files import REGISTRY_LIMIT


class FetchError(AronetError):
    """The fetch failed; what was there before stays."""


@dataclass(frozen=True)
class Cached:
    """One URL's last good body and the validators that came with it."""

    body: bytes | None = None
    etag: str | None = None
    last_modified: str | None = None


class _SameScheme(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme != urllib.parse.urlsplit(req.full_url).scheme:
            raise FetchError(f"{req.full_url}: redirected to {newurl}: another scheme is refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_SameScheme)


def get(url: str, cached: Cached = Cached(), timeout: float = 30.0, limit: int = REGISTRY_LIMIT
        ) -> tuple[Cached, bool]:
    """(the URL's body and validators, whether it changed). 304 Not Modified gives
    cached back. A body that is empty, larger than limit or shorter than its
    Content-Length is a FetchError."""
    headers = {"User-Agent": f"aronet/{__version__}"}
    if cached.body is not None:
        if cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
    req = urllib.request.Request(url, headers=headers)
    try:
        with _opener.open(req, timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > limit:
                raise FetchError(f"{url}: {expected} bytes is too large; at most {limit} are read")
            body = r.read(limit + 1)
            etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
    except urllib.error.HTTPError as e:
        if e.code == 304 and cached.body is not None:
            return cached, False
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except http.client.IncompleteRead as e:
        raise FetchError(f"{url}: the download ended after {len(e.partial)} bytes; kept what "
                         "was there") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"{url}: {reason}") from None
    if len(body) > limit:
        raise FetchError(f"{url}: more than {limit} bytes is too large")
    if expected is not None and len(body) != expected:
        raise FetchError(f"{url}: {len(body)} of {expected} bytes arrived; kept what was there")
    if not body:
        raise FetchError(f"{url}: the body is empty; kept what was there")
    new = Cached(body, etag, modified)
    return new, body != cached.body


@dataclass(frozen=True)
class Pair:
    """A registry and its .sig as last fetched."""

    registry: Cached = Cached()
    signature: Cached = Cached()


def get_pair(url: str, cached: Pair, *, signed: bool, timeout: float = 30.0) -> tuple[Pair, bool]:
    """Fetch URL and, when signed, URL.sig: (both as they are now, whether either changed)."""
    reg, changed = get(url, cached.registry, timeout)
    sig, sig_changed = (get(url + ".sig", cached.signature, timeout) if signed
                        else (cached.signature, False))
    return replace(cached, registry=reg, signature=sig), changed or sig_changed


def text(body: bytes, url: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FetchError(f"{url}: not UTF-8 text ({e.reason})") from None
