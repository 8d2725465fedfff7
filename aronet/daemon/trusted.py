"""The agent's registry gate: every registry the agent would run is verified here
(aronet.trust) before anything changes, and what it accepted is kept.

Kept in the state directory, each written atomically: the registry's exact text
(Paths.registry), its .sig (Paths.registry_sig) and the trust state
(Paths.trust_state: the highest accepted serial, its hashes, every key ever
revoked), written last, so a crash between the writes leaves a pair the next
start still accepts. The planner sees the registry with its revocations applied
(aronet.trust.effective). As time passes, a statement that expires is frozen
(on_expiry "freeze": the mesh stays as it is, no peer is added) or fails (on_expiry
"fail": the node keeps no peer) until a valid registry arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable

from ..adapters.files import write_atomic
from ..core.status import RegistryInfo
from ..errors import InputError, Problem
from ..load import Signed
from ..model import Config, Registry
from ..paths import Paths
from ..trust import TrustState, Verdict, effective, verify
from ..trust.statement import format_time

log = logging.getLogger("aronet")


class Gate:
    def __init__(self, config: Config, paths: Paths, clock: Callable[[], float] = time.time):
        self.config, self.paths, self.clock = config, paths, clock
        self.policy = config.registry
        self.state = self._read_state()
        self.verdict: Verdict | None = None  # of the registry in force
        self.left_out: list[str] = []
        self.failed = False  # expired with on_expiry "fail": the node keeps no peer
        self.last_fetch: str | None = None

    def _read_state(self) -> TrustState:
        try:
            with open(self.paths.trust_state) as f:
                return TrustState.from_json(json.load(f))
        except FileNotFoundError:
            return TrustState()
        except (OSError, ValueError) as e:
            # Never start over from serial 0 silently: that would allow a rollback.
            raise InputError(Problem(self.paths.trust_state, "$", f"unreadable ({e}); restore it, "
                                     "or remove it to accept any serial again")) from None

    def check(self, signed: Signed, *, current: bool = False) -> Verdict:
        """The verdict on signed (changes nothing). current: the registry in force,
        re-checked: it may be expired, when it is the one accepted before."""
        v = verify(signed.data, signed.sig_text, self.policy, self.state, self.clock(),
                   registry_file=signed.file, sig_file=signed.sig_file, current=current)
        if current and v.expired and v.statement_sha256 != self.state.statement_sha256:
            return dataclasses.replace(v, accepted=False, refused=tuple(
                n for n in v.notes if n.path == "$.statement.expires_at"))
        return v

    def planned(self, registry: Registry, verdict: Verdict) -> Registry:
        """The registry the planner sees: revocations applied, and no peer at all when
        the statement expired and on_expiry is "fail"."""
        reg, self.left_out = effective(registry, verdict.revoked_keys, verdict.revoked_nodes,
                                       self.config.node.key)
        for line in self.left_out:
            log.warning("registry: %s", line)
        self.failed = verdict.expired and self.policy.on_expiry == "fail"
        if self.failed:
            reg = self.only_me(reg)
        return reg

    def only_me(self, registry: Registry) -> Registry:
        return dataclasses.replace(registry, nodes=tuple(n for n in registry.nodes
                                                         if n.key == self.config.node.key))

    def commit(self, verdict: Verdict, signed: Signed) -> None:
        """Keep what was accepted: the registry, its .sig (or none), then the state."""
        write_atomic(self.paths.registry, signed.text, mode=0o600)
        if signed.sig_text is not None:
            write_atomic(self.paths.registry_sig, signed.sig_text, mode=0o600)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.registry_sig)
        if verdict.statement is not None:
            write_atomic(self.paths.trust_state, json.dumps(verdict.state.to_json(), indent=2) + "\n",
                         mode=0o600)
            self.state = verdict.state
        self.verdict = verdict

    def expired_now(self) -> bool:
        """Whether the statement in force has just passed its expiry (logged once)."""
        st = self.verdict.statement if self.verdict else None
        if st is None or self.verdict.expired:
            return False
        if st.expires_at + self.policy.clock_skew >= self.clock():
            return False
        self.verdict = dataclasses.replace(self.verdict, expired=True)
        if self.policy.on_expiry == "fail":
            log.error("registry: the statement (serial %d) expired at %s: on_expiry is \"fail\", so "
                      "this node drops every peer until a valid registry arrives", st.serial,
                      format_time(st.expires_at))
        else:
            log.warning("registry: the statement (serial %d) expired at %s: frozen (the tunnels stay, "
                        "no peer is added) until a valid registry arrives", st.serial,
                        format_time(st.expires_at))
        return True

    def info(self, registry: Registry) -> RegistryInfo:
        v = self.verdict
        st = v.statement if v else None
        state = "unsigned"
        if st is not None:
            state = "valid" if not v.expired else ("expired (failed)" if self.failed
                                                   else "expired (frozen)")
        return RegistryInfo(
            nodes=len(registry.nodes), signature=self.policy.signature, state=state,
            mesh=st.mesh if st else None, serial=st.serial if st else None,
            signers=v.signers if v else (), issued_at=format_time(st.issued_at) if st else None,
            expires_at=format_time(st.expires_at) if st else None,
            revoked=(len(v.revoked_keys) + len(v.revoked_nodes)) if v else 0,
            left_out=tuple(self.left_out), source=self.policy.source, last_fetch=self.last_fetch)

    def start(self, registry: Registry | None, signed: Signed | None) -> Registry | None:
        """At start, before anything changes: the registry given (or saved) is verified
        like a load (InputError when refused); returns what the planner sees."""
        if registry is None or signed is None:
            return registry
        v = self.check(signed, current=True)
        v.raise_refused()
        for note in v.notes:
            log.warning("registry: %s", note)
        planned = self.planned(registry, v)
        self.commit(v, signed)
        return planned

    def tick(self, registry: Registry) -> Registry:
        """As time passes: the registry to keep running (no peer once failed)."""
        if self.expired_now() and self.policy.on_expiry == "fail":
            self.failed = True
            return self.only_me(registry)
        return registry
