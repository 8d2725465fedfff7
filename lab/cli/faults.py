"""Faults a running lab takes: link, partition, drop-esp, heal, loss, kill, start,
reload, revoke (a signed lab), and impair (delay, jitter, loss and rate on a LAN or link, at run time)."""

from __future__ import annotations

import argparse

from .. import run as labrun
from .common import lab_args


def cmd_fault(args) -> int:
    """link down|up A B, partition A B, heal, loss LINK PCT, drop-esp A B."""
    from .. import underlay

    lab = labrun.find_lab(args.name, args.dir)
    plan = lab.plan
    if args.command == "link":
        underlay.set_link(plan, args.a, args.b, args.state == "up")
        print(f"link {args.a} {args.b} {args.state}")
    elif args.command == "partition":
        underlay.partition(plan, args.a, args.b)
        print(f"partitioned {args.a} from {args.b} (undo: aronet-lab heal)")
    elif args.command == "drop-esp":
        underlay.drop_esp(plan, args.a, args.b)
        print(f"dropping ESP-in-UDP between {args.a} and {args.b}; IKE still passes (undo: heal)")
    elif args.command == "heal":
        underlay.heal(plan)
        print("healed: every partition and ESP drop removed")
    elif args.command == "loss":
        underlay.set_loss(plan, args.link, args.pct)
        print(f"loss {args.pct}% on {args.link}")
    return 0


def cmd_kill(args) -> int:
    """Kill a node's agent (SIGKILL: its children die with it), as a crash would."""
    import signal

    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    labrun.stop_agents(lab, [args.node], sig=signal.SIGKILL)
    print(f"killed {args.node}'s agent (undo: aronet-lab start {args.node})")
    return 0


def cmd_start(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    pid = labrun.restart_agent(lab, args.node)
    print(f"started {args.node}'s agent, pid {pid}")
    return 0


def cmd_reload(args) -> int:
    """Give one node's running agent a registry (validated first; refused ones change
    nothing)."""
    from aronet.client import request
    from aronet.load import build_registry, parse_json, read_signed

    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    signed = read_signed(args.registry, args.sig)  # the exact text: a signature covers it
    build_registry(parse_json(signed.text, args.registry), args.registry)
    reply = request(lab.control_socket(args.node),
                    {"cmd": "load", "file": args.registry, "registry": signed.text,
                     "signature": signed.sig_text, "signature_file": signed.sig_file}, timeout=120)
    print(f"{args.node}: loaded {args.registry} ({reply['nodes']} nodes, "
          f"{len(reply['changes'])} changes)")
    return 0


def cmd_revoke(args) -> int:
    from .. import revoke

    report = revoke.revoke(labrun.find_lab(args.name, args.dir), args.node, args.reason, args.timeout)
    print(report.as_text(), end="" if report.as_text().endswith("\n") else "\n")
    return 0 if report.ok else 1


def cmd_impair(args) -> int:
    """Delay, jitter, loss and rate on a LAN or link (one direction with --to), at
    run time; --clear removes what is in force there."""
    from .. import impair

    lab = labrun.find_lab(args.name, args.dir)
    target = impair.target(lab.plan, args.link, args.peer, args.to)
    if args.clear:
        if any(v is not None for v in (args.delay, args.jitter, args.loss, args.rate)):
            raise impair.usage("--clear takes no --delay, --jitter, --loss or --rate")
        changed = impair.clear(lab, target)
        print(f"cleared {impair.describe_target(target)}" + ("" if changed else " (nothing was in force)"))
        return 0
    wanted = impair.Impairment.of(delay=args.delay, jitter=args.jitter, loss=args.loss, rate=args.rate)
    how = impair.apply(lab, target, wanted)
    print(f"{impair.describe_target(target)}: {wanted} ({how})")
    return 0


def add_parsers(sub) -> None:
    ln = sub.add_parser("link", help="take the underlay link between A and B down or up")
    lab_args(ln)
    ln.add_argument("state", choices=("down", "up"))
    ln.add_argument("a")
    ln.add_argument("b", help="a node or NAT router, or a LAN or link A is on")
    ln.set_defaults(func=cmd_fault)
    pt = sub.add_parser("partition", help="drop all underlay traffic between A and B")
    lab_args(pt)
    pt.add_argument("a")
    pt.add_argument("b")
    pt.set_defaults(func=cmd_fault)
    de = sub.add_parser("drop-esp", help="drop only ESP-in-UDP between A and B (IKE passes)")
    lab_args(de)
    de.add_argument("a")
    de.add_argument("b")
    de.set_defaults(func=cmd_fault)
    hl = sub.add_parser("heal", help="undo every partition and ESP drop")
    lab_args(hl)
    hl.set_defaults(func=cmd_fault)
    ls = sub.add_parser("loss", help="drop PCT %% of the frames on a LAN or link (0 removes it)")
    lab_args(ls)
    ls.add_argument("link")
    ls.add_argument("pct", type=int, choices=range(101), metavar="PCT")
    ls.set_defaults(func=cmd_fault)
    kl = sub.add_parser("kill", help="kill a node's agent, as a crash would")
    lab_args(kl)
    kl.add_argument("node")
    kl.set_defaults(func=cmd_kill)
    sa = sub.add_parser("start", help="start a killed node's agent again")
    lab_args(sa)
    sa.add_argument("node")
    sa.set_defaults(func=cmd_start)
    rl = sub.add_parser("reload", help="give a node's agent a new registry")
    lab_args(rl)
    rl.add_argument("node")
    rl.add_argument("registry")
    rl.add_argument("--sig", help="its signature (default: REGISTRY.sig, if it exists)")
    rl.set_defaults(func=cmd_reload)
    rv = sub.add_parser("revoke", help="sign and give every peer a registry that revokes NODE; "
                        "measure until every one has cut it off (a signed lab: up --signed)")
    lab_args(rv)
    rv.add_argument("node")
    rv.add_argument("--reason", default="revoked by aronet-lab")
    rv.add_argument("--timeout", type=float, default=120.0)
    rv.set_defaults(func=cmd_revoke)

    im = sub.add_parser("impair", help="delay, jitter, loss and rate on a LAN or link, at run time "
                        "(netem where the kernel has it, else loss only, in nftables)")
    lab_args(im)
    im.add_argument("link", help="a LAN or link (as `inspect` names them), or node A of `A B`")
    im.add_argument("peer", nargs="?", help="node B: the link between A and B")
    im.add_argument("--to", metavar="MEMBER", help="only the frames delivered to MEMBER (one direction)")
    im.add_argument("--delay", type=_non_negative, metavar="MS", help="milliseconds")
    im.add_argument("--jitter", type=_non_negative, metavar="MS", help="milliseconds, with --delay")
    im.add_argument("--loss", type=_percent, metavar="PCT", help="percent of the frames dropped")
    im.add_argument("--rate", metavar="R", help="like 10mbit, 512kbit, 1gbit")
    im.add_argument("--clear", action="store_true", help="remove every impairment there")
    im.set_defaults(func=cmd_impair)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 60000:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 60000")
    return value


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage (0 to 100)")
    return value
