"""For every tier: SIGINT as a terminal delivers it, and the --deep option: the
property tests over the input surfaces (tests/unit/test_surfaces_properties.py) take
ten times the examples, and the tests marked `deep` (the slowest, whose ground the
default run covers otherwise) run too; without it they are skipped, with the reason."""

import signal

import pytest

SURFACE_EXAMPLES = 2000  # the three surface tests together, in CI
DEEP_FACTOR = 10


def pytest_addoption(parser):
    parser.addoption("--deep", action="store_true", default=False,
                     help=f"property tests over the input surfaces: {DEEP_FACTOR} times the "
                          f"examples (about {SURFACE_EXAMPLES * DEEP_FACTOR:,}), with a random seed; "
                          "and the tests marked deep")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--deep"):
        return
    skip = pytest.mark.skip(reason="a slow case the default run covers otherwise: pytest --deep")
    for item in items:
        if item.get_closest_marker("deep"):
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "deep: slow; runs only with --deep (README, Tests)")
    # A run started as a background job of a non-interactive shell (`make test &`)
    # inherits SIGINT ignored, and so would every command it starts. The tests of
    # Ctrl-C, and of commands interrupted with SIGINT, need it delivered as a terminal
    # would deliver it; a handled signal is reset to its default in exec'd children.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _surface_profile(config.getoption("--deep"))


def _surface_profile(deep: bool) -> None:
    """The hypothesis profile "aronet-surfaces" (registered, not loaded: other property
    tests keep their own settings). Its max_examples is the budget of the three surface
    tests together; CI is derandomized (the same examples every run), --deep is not."""
    try:
        from hypothesis import settings
    except ImportError:  # a tier run without the test extras
        return
    if deep:
        settings.register_profile("aronet-surfaces", max_examples=SURFACE_EXAMPLES * DEEP_FACTOR,
                                  derandomize=False, database=None, print_blob=True)
    else:
        settings.register_profile("aronet-surfaces", max_examples=SURFACE_EXAMPLES,
                                  derandomize=True, database=None)
