"""Scaling plots: time and memory of fattr and its peer against steps, batch size and image size.

IG (fattr against captum, both with a chunk of 64 path points), occlusion (fattr's default
against captum's default and its best `perturbations_per_eval` of 1, 4, 16) and ScoreCAM (fattr
against pytorch-grad-cam, both 64 masked images a call), on torchvision resnet18 (random
weights, float32, one thread). Every point is the median CPU time of interleaved rounds and
the peak of live tensor bytes of one call (`benchmarks.harness`). One PNG per method:

    benchmarks/plots/{integrated_gradients,occlusion,scorecam}.png

    .venv/bin/python benchmarks/scaling.py [--small]    # --small: fewer, smaller points
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import median_times, peak_live_bytes

HERE = Path(__file__).resolve().parent
Series = dict[str, list[tuple[float, float, float]]]  # name -> [(x, seconds, MB)]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def _point(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    times = median_times(fns, rounds=rounds, warmup=1, clock=time.process_time)
    return {k: (times[k], peak_live_bytes(fn) / 2**20) for k, fn in fns.items()}


def _sweep(make: Callable[[int], dict[str, Callable[[], object]]], values: list[int],
           rounds: int) -> Series:
    series: Series = {}
    for v in values:
        for name, (seconds, mb) in _point(make(v), rounds).items():
            series.setdefault(name, []).append((v, seconds, mb))
    return series


def ig_sweeps(small: bool) -> dict[str, Series]:
    import captum.attr as ca

    net = _net()
    f, params = fattr.functional(net)

    def make(steps: int = 16, batch: int = 2, size: int = 32):
        x, t = torch.randn(batch, 3, size, size), torch.arange(batch)
        ig = fattr.integrated_gradients(f, steps=steps, batch_size=64)
        cig = ca.IntegratedGradients(net)
        return {"fattr": lambda: ig(params, x, t),
                "captum": lambda: cig.attribute(x, target=t, n_steps=steps,
                                                internal_batch_size=64)}

    return {"steps": _sweep(lambda s: make(steps=s), [8, 32] if small else [8, 32, 64, 128], 2),
            "batch size": _sweep(lambda b: make(batch=b), [1, 4] if small else [1, 2, 4, 8], 2),
            "image size": _sweep(lambda s: make(size=s), [32, 64] if small else [32, 64, 96, 128],
                                 2)}


def occlusion_sweeps(small: bool) -> dict[str, Series]:
    import captum.attr as ca

    net = _net()
    f, params = fattr.functional(net)

    def make(batch: int = 2, size: int = 32, stride: int = 8):
        x, t = torch.randn(batch, 3, size, size), torch.arange(batch)
        window, strides = (3, 8, 8), (3, stride, stride)
        occ = fattr.occlusion(f, window, strides)
        run = lambda ppe: ca.Occlusion(net).attribute(
            x, sliding_window_shapes=window, strides=strides, target=t,
            perturbations_per_eval=ppe)
        fns = {"fattr default": lambda: occ(params, x, t),
               "captum default": lambda: run(1)}
        fns.update({f"captum ppe={p}": (lambda p=p: run(p)) for p in (4, 16)})
        return fns

    series = {
        "window positions": _sweep(lambda s: make(stride=s), [8, 4] if small else [8, 6, 4], 1),
        "batch size": _sweep(lambda b: make(batch=b), [1, 2] if small else [1, 2, 4], 1),
        "image size": _sweep(lambda s: make(size=s), [32, 48] if small else [32, 48, 64], 1)}
    positions = {8: 9, 6: 25, 4: 49}  # 32x32 with an 8x8 window: positions per stride
    for name, points in series["window positions"].items():
        series["window positions"][name] = [(positions.get(int(v), v), s, m)
                                            for v, s, m in points]
    return series


def scorecam_sweeps(small: bool) -> dict[str, Series]:
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _net()
    f, params = fattr.functional(net)

    def make(batch: int = 1, size: int = 32, chunk: int = 64):
        x = torch.randn(batch, 3, size, size)
        targets = list(range(batch))
        cam = fattr.scorecam(f, "layer3", batch_size=chunk)

        def peer():
            with ScoreCAM(model=net, target_layers=[net.layer3]) as extractor:
                extractor.batch_size = chunk
                return extractor(input_tensor=x,
                                 targets=[ClassifierOutputTarget(c) for c in targets])

        return {"fattr": lambda: cam(params, x, targets), "pytorch-grad-cam": peer}

    return {"chunk (batch_size)": _sweep(lambda c: make(chunk=c), [16, 64] if small else
                                         [16, 64, 128], 1),
            "batch size": _sweep(lambda b: make(batch=b), [1, 2] if small else [1, 2, 4], 1),
            "image size": _sweep(lambda s: make(size=s), [32, 48] if small else [32, 48, 64], 1)}


def plot(title: str, sweeps: dict[str, Series], path: Path) -> None:
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4.2 * len(sweeps), 6.4), squeeze=False)
    for column, (axis_name, series) in enumerate(sweeps.items()):
        for name, points in series.items():
            xs = [p[0] for p in points]
            axes[0, column].plot(xs, [p[1] for p in points], marker="o", label=name)
            axes[1, column].plot(xs, [p[2] for p in points], marker="o", label=name)
        axes[0, column].set_title(axis_name)
        axes[1, column].set_xlabel(axis_name)
    axes[0, 0].set_ylabel("CPU time of one call (s)")
    axes[1, 0].set_ylabel("peak live tensor memory (MB)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: resnet18, one thread, CPU (shared machine)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


PLOTS = {"integrated_gradients": ("Integrated gradients, fattr vs captum", ig_sweeps),
         "occlusion": ("Occlusion, fattr vs captum", occlusion_sweeps),
         "scorecam": ("ScoreCAM (layer3), fattr vs pytorch-grad-cam", scorecam_sweeps)}


def main(small: bool = False, out: Path = HERE / "plots") -> list[Path]:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    paths = []
    for name, (title, sweeps) in PLOTS.items():
        path = out / f"{name}.png"
        plot(title, sweeps(small), path)
        print(f"wrote {path}", file=sys.stderr, flush=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    main(small="--small" in sys.argv)
