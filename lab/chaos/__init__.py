"""aronet-lab chaos: random faults on a seeded, reproducible schedule against a
running lab, the invariants after each fault and heal, a timeline and a summary.
A benchmark, not a test (README, Benchmarks).

  schedule  the events: pure, the same seed gives the same schedule
  soak      running them, the invariants
  report    the summary, the text and the JSON file
"""

from .report import as_text, summarize, write
from .schedule import DEFAULTS, FAULTS, Event, Schedule, choices, make_schedule
from .soak import refused_registry, soak

__all__ = ["DEFAULTS", "FAULTS", "Event", "Schedule", "as_text", "choices", "make_schedule",
           "refused_registry", "soak", "summarize", "write"]
