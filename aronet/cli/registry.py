"""`aronet registry validate | build | show | verify | fetch`: registry.json, and
what a node would make of it and its signature (aronet.trust). keygen and sign are
in signing.py."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING

from ..errors import InputError, Problem
from ..model import RegistryPolicy
from ..paths import Paths
from . import signing
from .common import write_file

if TYPE_CHECKING:
    from ..load import Signed
    from ..trust import TrustState, Verdict


def registry_validate(args) -> int:
    from ..load import load_registry

    reg = load_registry(args.file)
    orgs = len({n.organization for n in reg.nodes})
    print(f"{args.file}: valid ({len(reg.nodes)} nodes in {orgs} organizations)")
    return 0


def registry_build(args) -> int:
    from ..core.registry import registry_document
    from ..load import build_registry, load_config

    problems, configs = [], []
    for path in args.configs:
        try:
            configs.append(load_config(path))
        except InputError as e:
            problems += e.problems
    if problems:
        raise InputError(problems)
    doc = registry_document(configs)
    build_registry(doc, args.output or "<built registry>")  # the generator's output must validate
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        write_file(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def registry_show(args) -> int:
    from ..load import read_signed
    from ..trust import decode_envelope
    from ..trust.statement import registry_hash

    signed = read_signed(args.registry, args.sig)
    if signed.sig_text is None:
        raise InputError(Problem(signed.sig_file, "$", "missing: this registry is not signed"))
    statement, _, signatures = decode_envelope(signed.sig_text, signed.sig_file)
    doc = {**statement.to_json(), "registry_matches": registry_hash(signed.data) ==
           statement.registry_sha256, "signers": [s.signer for s in signatures]}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{signed.sig_file}: mesh {statement.mesh}, serial {statement.serial}")
    print(f"  issued {doc['issued_at']}, expires {doc['expires_at']}")
    print(f"  registry sha256 {statement.registry_sha256} "
          f"({'matches' if doc['registry_matches'] else 'does NOT match'} {signed.file})")
    for r in statement.revoked_keys:
        print(f"  revoked key {r.subject}: {r.reason}")
    for r in statement.revoked_nodes:
        print(f"  revoked node {r.subject}: {r.reason}")
    for s in signatures:
        print(f"  signed by {s.signer} (not verified here: `aronet registry verify` checks)")
    return 0


def _policy(args) -> tuple[RegistryPolicy, tuple[str, str], str | None]:
    """(the policy, the node it is for, its state directory) from -c or the options."""
    if args.config:
        from ..load import load_config

        config = load_config(args.config)
        state_dir = args.state_dir or Paths.for_instance(config.settings.ifname).state_dir
        return config.registry, config.node.key, state_dir
    if not args.trusted:
        return RegistryPolicy(), ("", ""), args.state_dir
    if not args.mesh:
        raise InputError(Problem("aronet registry", "--mesh", "needed with --trusted"))
    from ..load.policy import registry_policy
    from ..load.values import Collector

    out = Collector("aronet registry")
    policy = registry_policy({"signature": "required", "mesh": args.mesh, "trusted_keys": args.trusted,
                              "threshold": args.threshold}, out, os.getcwd())
    if out.problems:
        raise InputError([Problem(p.file, p.path.replace("$.registry.trusted_keys", "--trusted"),
                                  p.message) for p in out.problems])
    return policy, ("", ""), args.state_dir


def _state(state_dir: str | None) -> TrustState:
    from ..trust import TrustState

    if state_dir is None:
        return TrustState()
    path = Paths(runtime_dir="", state_dir=state_dir).trust_state
    try:
        with open(path) as f:
            return TrustState.from_json(json.load(f))
    except FileNotFoundError:
        return TrustState()
    except (OSError, ValueError) as e:
        raise InputError(Problem(path, "$", f"unreadable: {e}")) from None


def _verdict(signed: Signed, args) -> tuple[Verdict, RegistryPolicy, tuple[str, str]]:
    from ..load import build_registry, parse_json
    from ..trust import effective, verify
    from ..trust.statement import format_time

    policy, me, state_dir = _policy(args)
    now = time.time() if args.at is None else signing.when(args.at, 0, "--at")
    registry = build_registry(parse_json(signed.text, signed.file), signed.file)
    v = verify(signed.data, signed.sig_text, policy, _state(state_dir), now, registry_file=signed.file,
               sig_file=signed.sig_file)
    for note in v.notes:
        print(f"note: {note}")
    if not v.accepted:
        raise InputError(list(v.refused))
    _, left_out = effective(registry, v.revoked_keys, v.revoked_nodes, me)
    st = v.statement
    if st is None:
        print(f"{signed.file}: accepted unsigned ({len(registry.nodes)} nodes)")
    else:
        print(f"{signed.file}: accepted: mesh {st.mesh}, serial {st.serial}, {len(v.signers)} of "
              f"{policy.threshold} required signature(s), expires {format_time(st.expires_at)}")
        for signer in v.signers:
            print(f"  signed by {signer}")
    for line in left_out:
        print(f"  {line}")
    return v, policy, me


def registry_verify(args) -> int:
    if not args.config and not args.trusted:
        raise InputError(Problem("aronet registry verify", "-c", "give the node's config (-c) or the "
                                 "trusted keys (--trusted, --mesh, --threshold)"))
    from ..load import read_signed

    _verdict(read_signed(args.registry, args.sig), args)
    return 0


def registry_fetch(args) -> int:
    """Fetch URL (and URL.sig), verify, and only then replace OUTPUT (and OUTPUT.sig)."""
    from ..adapters import http
    from ..load import Signed

    policy, _, _ = _policy(args)
    url = args.url
    if url.lower().startswith("http://") and policy.signature != "required":
        raise InputError(Problem("aronet registry fetch", "URL", f"{url!r} is plain HTTP: allowed only "
                                 "when signatures are required (-c with registry.signature "
                                 "\"required\", or --trusted); use https"))
    if not url.lower().startswith(("http://", "https://")):
        raise InputError(Problem("aronet registry fetch", "URL", f"{url!r} is no http(s) URL"))
    pair, _ = http.get_pair(url, http.Pair(), signed=policy.checks, timeout=args.timeout)
    sig = pair.signature.body
    signed = Signed(url, http.text(pair.registry.body, url), url + ".sig",
                    None if sig is None else http.text(sig, url + ".sig"))
    _verdict(signed, args)
    output = args.output
    try:
        with open(output) as f:
            same = f.read() == signed.text
    except OSError:
        same = False
    write_file(output, signed.text)
    if signed.sig_text is not None:
        write_file(output + ".sig", signed.sig_text)
    print(f"{output}: {'unchanged' if same else 'replaced'}" + (f"; {output}.sig written"
                                                                if signed.sig_text else ""))
    return 0


def _trust_options(sp, what: str) -> None:
    sp.add_argument("-c", "--config", help=f"{what} as this node's config (its registry block) says")
    sp.add_argument("--trusted", action="append", default=[], metavar="KEY",
                    help="instead of -c: a trusted signer key, ed25519:BASE64 (repeat)")
    sp.add_argument("--threshold", type=int, default=1, help="with --trusted: signatures needed")
    sp.add_argument("--mesh", help="with --trusted: the mesh's name")
    sp.add_argument("--state-dir", help="check rollback against this agent state directory "
                                        "(with -c: the node's default, if it has one)")
    sp.add_argument("--at", help="check as of this time (2030-01-01T00:00:00Z) instead of now")


def add(sub) -> None:
    reg = sub.add_parser("registry", help="registry.json").add_subparsers(dest="sub", required=True)
    v = reg.add_parser("validate", help="check a registry file")
    v.add_argument("file")
    v.set_defaults(func=registry_validate)
    b = reg.add_parser("build", help="build a registry from node configs")
    b.add_argument("configs", nargs="+", metavar="CONFIG")
    b.add_argument("-o", "--output", help="write here (atomically) instead of stdout")
    b.set_defaults(func=registry_build)
    signing.add(reg)
    ver = reg.add_parser("verify", help="what a node would accept or refuse of REGISTRY and its .sig, "
                                        "and why (exit 2: refused)")
    ver.add_argument("registry")
    ver.add_argument("--sig", help="default REGISTRY.sig")
    _trust_options(ver, "judge")
    ver.set_defaults(func=registry_verify)
    sh = reg.add_parser("show", help="print the signed statement of REGISTRY.sig (not verified)")
    sh.add_argument("registry")
    sh.add_argument("--sig", help="default REGISTRY.sig")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=registry_show)
    f = reg.add_parser("fetch", help="fetch URL and URL.sig once; verify; only then write OUTPUT")
    f.add_argument("url", metavar="URL")
    f.add_argument("-o", "--output", required=True, help="the registry file to replace")
    f.add_argument("--timeout", type=float, default=30.0)
    _trust_options(f, "verify")
    f.set_defaults(func=registry_fetch)

