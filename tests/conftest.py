"""For every tier."""

import signal


def pytest_configure(config):
    # A run started as a background job of a non-interactive shell (`make test &`)
    # inherits SIGINT ignored, and so would every command it starts. The tests of
    # Ctrl-C, and of commands interrupted with SIGINT, need it delivered as a terminal
    # would deliver it; a handled signal is reset to its default in exec'd children.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
