"""Performance regression: the cheap configuration of every goal of issue 13 against recorded
loose bounds (ratios only, never absolute times).

`benchmarks.goals.measure(cheap=True)` runs each comparison on small models (fattr against its
peer, or against one batched forward + backward), as ratios of medians of interleaved rounds of
CPU time on one thread. `benchmarks/regression_bounds.json` holds the ratios recorded on the
shared development machine and a bound 1.6x worse than the worst of them. A section whose ratio
misses its bound is measured again, twice, and its best ratio counts: a loaded machine slows
everything in a round alike, but not always, while a real regression stays. About 40 s.

Re-record the bounds on a quiet machine: `python tests/test_bench_regression.py --record`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.goals import SECTIONS, Goal, measure  # noqa: E402

BOUNDS = ROOT / "benchmarks" / "regression_bounds.json"
RETRIES = 2


def _within(value: float, bound: dict) -> bool:
    return value <= bound["bound"] if bound["better"] == "<=" else value >= bound["bound"]


def _best(values: list[float], better: str) -> float:
    return min(values) if better == "<=" else max(values)


def test_cheap_configuration_ratios_stay_within_recorded_bounds():
    bounds = json.loads(BOUNDS.read_text())["goals"]
    section_of = {}
    measured: dict[str, list[float]] = {}
    for section in SECTIONS:
        for goal in measure(cheap=True, sections=(section,)):
            section_of[goal.name] = section
            measured.setdefault(goal.name, []).append(goal.measured)
    unmeasured = set(bounds) - set(measured)
    assert not unmeasured, f"goals without a measurement: {unmeasured}"
    for _ in range(RETRIES):
        missed = {section_of[n] for n, b in bounds.items()
                  if not _within(_best(measured[n], b["better"]), b)}
        for section in missed:
            for goal in measure(cheap=True, sections=(section,)):
                measured[goal.name].append(goal.measured)
    failures = [f"{name}: {', '.join(f'{v:.2f}' for v in measured[name])} (bound {b['better']} "
                f"{b['bound']}, recorded {b['recorded']})"
                for name, b in bounds.items() if not _within(_best(measured[name], b["better"]), b)]
    assert not failures, "ratios past their recorded bounds:\n" + "\n".join(failures)


def record(runs: int = 3) -> None:
    """Measure the cheap configuration `runs` times and write the bounds file."""
    results: list[list[Goal]] = [measure(cheap=True) for _ in range(runs)]
    goals = {}
    for name in [g.name for g in results[0]]:
        values = [next(g for g in run if g.name == name) for run in results]
        better, target = values[0].better, values[0].target
        ratios = [g.measured for g in values]
        if name.startswith("IG memory"):
            bound = target
        elif better == "<=":
            bound = math.ceil(max(ratios) * 1.6 * 100) / 100
        else:
            bound = math.floor(min(ratios) / 1.6 * 100) / 100
        goals[name] = {"recorded": [round(r, 3) for r in ratios], "bound": bound,
                       "better": better, "median": round(statistics.median(ratios), 3)}
    about = json.loads(BOUNDS.read_text())["_about"] if BOUNDS.exists() else ""
    BOUNDS.write_text(json.dumps({"_about": about, "goals": goals}, indent=1) + "\n")


if __name__ == "__main__":
    if "--record" in sys.argv:
        record()
