"""Side-by-side timing and peak-memory measurement for the benchmarks.

Every comparison runs in ONE process on the SAME inputs. Times: each function is warmed up,
then the functions are run in interleaved rounds (so drift in machine load hits all of them
alike) and the median per function is reported. Peak memory: the peak resident memory that one
call adds above what the process held before it (kernel high-water mark, reset per call).
Results are ratios against a named reference, never lone absolute times.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
import weakref
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@contextlib.contextmanager
def pair_on_numpy2() -> Iterator[None]:
    """PAIR 0.2.1 calls `np.quantile(..., interpolation=)`, removed in numpy 2: translate it
    while the block runs (PAIR's module `np` is numpy itself, so the patch is undone after)."""
    import numpy as np

    quantile = np.quantile
    np.quantile = lambda a, q, interpolation="linear", **kw: quantile(
        a, q, method=interpolation, **kw)
    try:
        yield
    finally:
        np.quantile = quantile


def median_times(fns: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 2,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median time of each function over interleaved rounds, after `warmup` calls each.
    `clock`: wall time by default; `time.process_time` for CPU time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak resident memory (bytes) that one call of `fn` adds, measured in this process.

    Freed heap memory is first returned to the OS (`malloc_trim`), then the kernel's
    high-water mark is reset (`/proc/self/clear_refs` "5", Linux >= 4.0), so the peak after the
    call minus the resident size before it is what the call needed. No fork: a forked child
    can hang in OpenMP once the parent has run multi-threaded kernels.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_kib("VmRSS")
    fn()
    return max(_status_kib("VmHWM") - start, 0) * 1024


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created by torch ops inside the mode and still referenced:
    a deterministic memory measure (the process's resident size also counts the allocator's
    fragmentation, which grows with the number of calls). Storage shared by views counts once;
    tensors made outside the mode (inputs, parameters) do not count."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.total = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.total -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0:
                continue
            if key not in self.live:
                self.live[key] = [storage.nbytes(), 0]
                self.total += storage.nbytes()
                self.peak = max(self.peak, self.total)
            self.live[key][1] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_live_bytes(fn: Callable[[], object]) -> int:
    """Peak tensor bytes one call of `fn` holds at once (`LiveTensorBytes`)."""
    with LiveTensorBytes() as mode:
        fn()
    return mode.peak


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
