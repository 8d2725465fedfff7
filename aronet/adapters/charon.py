"""How to start one charon per agent, so that many can share one kernel.

charon 5.9.8 always writes /var/run/charon.pid and refuses to start if another
charon's pid file is there. So charon alone gets a private /run: `unshare --mount`
gives it its own mount namespace, a tmpfs covers /run there, and the agent's runtime
directory is bind-mounted back at its usual path so the VICI socket appears where
the agent looks for it. The agent's own mount namespace (and /run/netns, which
namespace management needs) is untouched.
"""

from __future__ import annotations

import os
import shutil

CHARON_PATHS = ("/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon", "/usr/lib/strongswan/charon")

# fd 3 holds the runtime directory across the tmpfs mount; mount(8) then binds it back
# from /proc/self/fd/3 (mount inherits the descriptor; --no-canonicalize keeps mount(8)
# from resolving that link to the now-hidden path).
_WRAPPER = (
    'exec 3<"$1" && mount --make-rprivate / && mount -t tmpfs -o mode=0755 aronet-charon /run '
    '&& mkdir -p "$1" && mount --no-canonicalize --bind /proc/self/fd/3 "$1" && exec 3<&- && exec "$2"'
)


def find_charon() -> str | None:
    for p in CHARON_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("charon")


def command(charon: str, runtime_dir: str) -> list[str]:
    """argv that starts charon with a private /run. runtime_dir (absolute) stays
    visible to charon at the same path, wherever it is."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _WRAPPER,
            "aronet-charon", runtime_dir, charon]


def environment(conf_path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
    env["STRONGSWAN_CONF"] = conf_path
    return env
