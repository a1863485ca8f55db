"""The CAM family against pytorch-grad-cam 1.5.7, in one process, on the same batch.

ScoreCAM and AblationCAM evaluate the model once per (image, channel) pair. pytorch-grad-cam
loops over images in Python and sends one image's channels through the model 16 (ScoreCAM) or
32 (AblationCAM) at a time; fattr mixes images and channels in chunks of `batch_size`. Both are
also compared with the raw cost of the same number of plain no-grad forward passes (the least
any implementation can do). torchvision resnet18 (random weights), float32, target layer3
(256 channels), 32x32 inputs so that enough interleaved rounds fit; one intra-op thread.

Times come from `benchmarks.harness.median_times` (interleaved rounds, one process). Peak
memory is measured in a freshly SPAWNED interpreter per function that rebuilds the same seeded
inputs and resets the kernel's peak-RSS mark before the call: the harness's forked child
deadlocks in libgomp here (GNU OpenMP is not fork-safe once the parent has run parallel
regions).

    .venv/bin/python benchmarks/bench_cam.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars

import torch
import torchvision
from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import markdown, median_times

SIZE, BATCH = 32, 4
torch.set_num_threads(1)  # the same for both libraries: two OpenMP threads on a shared, loaded
#                           2-core machine spend most of their time waiting at barriers


def peer(cls, net, x, targets, **kwargs):
    with cls(model=net, target_layers=[net.layer3], **kwargs) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def tables() -> list[tuple[str, str, dict]]:
    """(title, reference, {name: fn}) for every comparison, on seeded inputs."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    f, params = fattr.functional(net)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    targets = list(range(BATCH))
    rows = x.repeat_interleave(256, 0)  # one row per (image, channel), as both methods need

    def raw_forwards(chunk):
        with torch.no_grad():
            return [net(rows[i:i + chunk]) for i in range(0, len(rows), chunk)]

    result = []
    for name, cls, method, peer_chunk in [
            ("ScoreCAM", ScoreCAM, fattr.scorecam, 16),
            ("AblationCAM", AblationCAM, fattr.ablationcam, 32)]:
        cam64 = method(f, "layer3", batch_size=64)
        cam_peer = method(f, "layer3", batch_size=peer_chunk)
        reference = f"pytorch-grad-cam {name}"
        result.append((
            f"{name}, resnet18 layer3, {BATCH} images {SIZE}x{SIZE}, {len(rows)} model "
            "inputs (ratios vs pytorch-grad-cam)", reference, {
                reference: lambda cls=cls: peer(cls, net, x, targets),
                f"fattr {method.__name__} (batch_size=64)":
                    lambda c=cam64: c(params, x, targets),
                f"fattr {method.__name__} (batch_size={peer_chunk})":
                    lambda c=cam_peer: c(params, x, targets),
                f"raw no-grad forwards of {len(rows)} rows, 64 a call": lambda: raw_forwards(64),
            }))
    gradcam = fattr.gradcam(f, "layer3")
    result.append((f"GradCAM, resnet18 layer3, {BATCH} images {SIZE}x{SIZE} (ratios vs "
                   "pytorch-grad-cam)", "pytorch-grad-cam GradCAM", {
                       "pytorch-grad-cam GradCAM": lambda: peer(GradCAM, net, x, targets),
                       "fattr gradcam": lambda: gradcam(params, x, targets)}))
    return result


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure_memory(table: int, name: str) -> int:
    """In this (spawned) process: peak RSS that one call of the function adds, in bytes.

    The kernel's peak-RSS mark (VmHWM) is reset just before the call, so import and setup
    peaks do not count.
    """
    fn = tables()[table][2][name]
    start = _status_kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    fn()
    return max(_status_kb("VmHWM:") - start, 0) * 1024


def spawned_peak(table: int, name: str, tries: int = 3) -> int:
    for attempt in range(tries):  # the checkout is shared: retry a transiently broken import
        out = subprocess.run([sys.executable, __file__, "--memory", str(table), name],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return int(out.stdout.split()[-1])
        time.sleep(10 * (attempt + 1))
    raise RuntimeError(f"memory measurement of {name!r} failed:\n{out.stderr}")


def main() -> str:
    parts = []
    for i, (title, reference, fns) in enumerate(tables()):
        rounds = 7 if "GradCAM," not in title else 15
        times = median_times(fns, rounds=rounds, warmup=1)
        peaks = {name: spawned_peak(i, name) for name in fns}
        rows = [{"name": name, "time_s": times[name], "time_ratio": times[name] / times[reference],
                 "peak_mb": peaks[name] / 2**20,
                 "memory_ratio": peaks[name] / max(peaks[reference], 1)} for name in fns]
        parts.append(markdown(rows, title))
    return "\n\n".join(parts)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        print(measure_memory(int(sys.argv[2]), sys.argv[3]))
    else:
        print(main())
