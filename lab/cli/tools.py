"""Commands that need no running lab: generate (a topology from a template) and
doctor (this kernel's features)."""

from __future__ import annotations

import sys

from .common import print_json


def cmd_generate(args) -> int:
    from .. import generate

    text = generate.as_yaml(generate.checked(
        args.template, args.nodes, name=args.lab, nat=args.nat, mode=args.mode, routing=args.routing,
        organizations=args.organizations))
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        generate.write(text, args.output)
        print(f"wrote {args.output}: {args.template} of {args.nodes} nodes"
              + (f", {args.nat} behind NAT" if args.nat else ""))
    return 0


def cmd_doctor(args) -> int:
    from .. import doctor

    features = doctor.probe()
    if args.json:
        print_json(doctor.report_json(features))
    else:
        sys.stdout.write(doctor.report(features))
    return 0 if doctor.can_run_here(features) else 1


def add_parsers(sub) -> None:
    from ..generate import TEMPLATES, count

    ge = sub.add_parser("generate", help="write a topology: full-mesh, ring or star of N nodes")
    ge.add_argument("template", choices=TEMPLATES)
    ge.add_argument("nodes", type=count, metavar="N")
    ge.add_argument("--nat", type=int, default=0, metavar="K", help="K nodes behind NAT routers")
    ge.add_argument("--mode", choices=("vrf", "netns"), help="every node's mode (default: the lab's)")
    ge.add_argument("--routing", choices=("bird", "babeld"), help="every node's routing daemon")
    ge.add_argument("--lab", default=None, help="the lab's name (default: the template's, e.g. ring5)")
    ge.add_argument("--organizations", type=lambda t: [x for x in t.split(",") if x],
                    default=None, metavar="O1,O2", help="nodes take them in turn (default org1,org2)")
    ge.add_argument("-o", "--output", help="the topology file (default: stdout)")
    ge.set_defaults(func=cmd_generate)

    dr = sub.add_parser("doctor", help="which kernel features are here, and what they allow")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_doctor)
