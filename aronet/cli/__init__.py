"""The `aronet` command line, one module per command group:

  keys      key generate | public
  config    config validate; plan
  registry  registry validate | build | verify | show | fetch
  signing   registry keygen | sign
  agent     daemon run | info | memory | stop; load; status; check
  observe   events; metrics
  common    finding an agent's socket; writing a file atomically

Bad input prints every problem (file: path: reason) and exits 2; a failing system
exits 1. A traceback means a bug in aronet, never bad input.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import AronetError, report_error
from . import agent, config, keys, observe, registry


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aronet", description="auto-routed full-mesh overlay network")
    p.add_argument("--version", action="version", version=f"aronet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys.add(sub)
    config.add(sub)
    registry.add(sub)
    config.add_plan(sub)
    agent.add_daemon(sub)
    agent.add_agent(sub)
    observe.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except AronetError as e:
        return report_error(e, "aronet")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `aronet plan | head`
        sys.stderr.close()
        return 0


__all__ = ["main", "parser"]
