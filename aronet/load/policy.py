"""config.json's `registry` block: which registries this node accepts, checked and
built into a model.RegistryPolicy (aronet.trust applies it).

Absent: signature "off", today's behaviour. Present without `signature`: "required".
With checks on, the mesh name and at least `threshold` distinct trusted keys are
needed. A source is an https URL, an http URL only when signatures are required
(the signature, not the transport, is what is trusted), or a path (relative to the
config file).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .. import keys
from ..model import RegistryPolicy
from ..trust import fingerprint
from .values import Collector, one_line


def registry_policy(raw, out: Collector, base_dir: str) -> RegistryPolicy:
    if not isinstance(raw, dict):  # absent, or the schema reported it
        return RegistryPolicy()
    defaults = RegistryPolicy()
    signature = raw.get("signature", "required")
    checks = signature != "off"
    at = ["registry"]
    fingerprints: dict[str, int] = {}
    for i, text in enumerate(raw.get("trusted_keys", []) if isinstance(raw.get("trusted_keys"), list)
                             else []):
        if not isinstance(text, str):
            continue
        try:
            fp = fingerprint(text)
        except keys.KeyProblem as e:
            out.add([*at, "trusted_keys", i], one_line(str(e)))
            continue
        if fp in fingerprints:
            out.add([*at, "trusted_keys", i], f"the same key as trusted_keys[{fingerprints[fp]}] ({fp})")
        fingerprints.setdefault(fp, i)
    threshold = raw.get("threshold", defaults.threshold)
    if checks:
        if "mesh" not in raw:
            out.add(at, f"signature {signature!r} needs \"mesh\": the name every statement must carry")
        if not raw.get("trusted_keys"):
            out.add(at, f"signature {signature!r} needs \"trusted_keys\": the keys that sign registries")
        elif isinstance(threshold, int) and len(fingerprints) < threshold and \
                len(fingerprints) == len(raw["trusted_keys"]):
            out.add([*at, "threshold"], f"{threshold} signatures needed, but only {len(fingerprints)} "
                    "trusted key(s) are given")
    source = raw.get("source")
    if isinstance(source, str):
        source = _source(source, signature, out, base_dir)
    return RegistryPolicy(
        signature=signature if isinstance(signature, str) else defaults.signature,
        mesh=raw.get("mesh", ""),
        trusted_keys=tuple(raw.get("trusted_keys", ())),
        threshold=threshold,
        on_expiry=raw.get("on_expiry", defaults.on_expiry),
        clock_skew=float(raw.get("clock_skew", defaults.clock_skew)),
        source=source,
        fetch_interval=float(raw.get("fetch_interval", defaults.fetch_interval)),
        fetch_timeout=float(raw.get("fetch_timeout", defaults.fetch_timeout)),
    )


def _source(text: str, signature: str, out: Collector, base_dir: str) -> str | None:
    path = ["registry", "source"]
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if not scheme:
        return os.path.abspath(os.path.join(base_dir, text))
    parts = urlsplit(text)
    if scheme not in ("http", "https") or not parts.hostname:
        out.add(path, f"{text!r} is neither an http(s) URL with a host nor a path")
    elif scheme == "http" and signature != "required":
        out.add(path, f"{text!r} is plain HTTP: allowed only with signature \"required\" (anyone "
                "on the path could change an unsigned registry); use https")
    return text
