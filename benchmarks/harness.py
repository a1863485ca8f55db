"""Side-by-side timing and peak-memory measurement for the benchmarks.

Every comparison runs in ONE process on the SAME inputs. Times: each function is warmed up,
then the functions are run in interleaved rounds (so drift in machine load hits all of them
alike) and the median per function is reported. Peak memory: each function runs once in a
forked child; the child's peak resident memory above what it held at the start is reported.
Results are ratios against a named reference, never lone absolute times.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable


def _time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_times(fns: dict[str, Callable[[], object]], rounds: int = 7,
                 warmup: int = 2) -> dict[str, float]:
    """Median wall time of each function over interleaved rounds, after `warmup` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time_once(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak resident memory (bytes) that one call of `fn` adds, measured in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, exit without running the parent's cleanup
        os.close(read)
        try:
            start = _rss_bytes()
            fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            os.write(write, str(max(peak - start, 0)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return int(data) if data else -1


def compare(fns: dict[str, Callable[[], object]], reference: str, rounds: int = 7,
            warmup: int = 2, memory: bool = True) -> list[dict[str, object]]:
    """Rows of {name, time_s, time_ratio, peak_mb, memory_ratio} against `reference`."""
    times = median_times(fns, rounds=rounds, warmup=warmup)
    peaks = {name: peak_memory(fn) for name, fn in fns.items()} if memory else {}
    rows = []
    for name in fns:
        row: dict[str, object] = {"name": name, "time_s": times[name],
                                  "time_ratio": times[name] / times[reference]}
        if memory:
            ref = max(peaks[reference], 1)
            row.update(peak_mb=peaks[name] / 2**20, memory_ratio=peaks[name] / ref)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]], title: str) -> str:
    """A markdown table of `compare` rows."""
    lines = [f"**{title}**", "", "| method | time (s) | time ratio | peak MB | memory ratio |",
             "|---|---|---|---|---|"]
    for r in rows:
        mem = (f"{r['peak_mb']:.0f} | {r['memory_ratio']:.2f}" if "peak_mb" in r else "- | -")
        lines.append(f"| {r['name']} | {r['time_s']:.3f} | {r['time_ratio']:.2f} | {mem} |")
    return "\n".join(lines)
