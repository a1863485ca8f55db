"""The GPU suite: fattr against its peers on CUDA, side by side, as one Markdown table.

torchvision resnet50 (random weights, float32) at 224x224 unless a row says otherwise:

- IG, 50 Gauss-Legendre steps, batch 16, 160 path points a call (both libraries): images per
  second, eager and with `torch.compile` of the model (fattr: `torch.compile(f)` of the model
  function; captum: `IntegratedGradients(torch.compile(net))`), plus a raw forward+backward of
  the same 800 points for scale;
- CAMs at layer4, batch 16: GradCAM, GradCAM++ and LayerCAM against pytorch-grad-cam and
  torchcam; ScoreCAM (batch 2, 128 masked images a call in every library);
- LRP epsilon_plus_flat against zennit (ResNetCanonizer), batch 16;
- Occlusion (window 3x16x16, stride 8) and feature ablation (14x14-pixel superpixels), batch 4:
  fattr's default `batch_size` against captum's default (`perturbations_per_eval=1`);
- Guided IG (small CNN, 32x32, batch 8, 50 steps) against PAIR's per-example loop.

Times are wall-clock with `torch.cuda.synchronize()`, medians of interleaved rounds after a
warm-up; memory is `torch.cuda.max_memory_allocated` of one call. The whole suite takes about 4
minutes on one H200 (compiling resnet50 twice is most of it; `--no-compile` skips that). It
never runs in the tests; `--device cpu --small` runs every row on tiny sizes, to check it.

    python benchmarks/gpu.py [--out benchmarks/gpu_results.md] [--no-compile]
    python benchmarks/gpu.py --device cpu --small
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import pair_on_numpy2, peak_live_bytes


@dataclass(frozen=True)
class Setup:
    device: torch.device
    small: bool

    @property
    def size(self) -> int:
        return 32 if self.small else 224

    @property
    def batch(self) -> int:
        return 2 if self.small else 16

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        net = torchvision.models.resnet18() if self.small else torchvision.models.resnet50()
        return net.to(self.device).eval()

    def images(self, batch: int | None = None) -> torch.Tensor:
        return torch.randn(batch or self.batch, 3, self.size, self.size, device=self.device)


@dataclass
class Row:
    group: str
    name: str
    seconds: float
    images: int
    memory_mb: float
    note: str = ""


def measure(setup: Setup, group: str, fns: dict[str, Callable[[], object]], images: int,
            rounds: int = 3, notes: dict[str, str] | None = None) -> list[Row]:
    """Median wall time of interleaved rounds (after one warm-up call each) and peak memory."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    failed: dict[str, str] = {}
    for name, fn in fns.items():
        try:
            fn()
        except Exception as error:  # a peer that cannot run this case is reported, not fatal
            failed[name] = f"failed: {type(error).__name__}: {str(error)[:120]}"
    for _ in range(rounds):
        for name, fn in fns.items():
            if name in failed:
                continue
            setup.sync()
            start = time.perf_counter()
            fn()
            setup.sync()
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, fn in fns.items():
        if name in failed:
            rows.append(Row(group, name, float("nan"), images, float("nan"), failed[name]))
            continue
        if setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(setup.device)
            base = torch.cuda.memory_allocated(setup.device)
            fn()
            setup.sync()
            memory = (torch.cuda.max_memory_allocated(setup.device) - base) / 2**20
        else:
            memory = peak_live_bytes(fn) / 2**20
        rows.append(Row(group, name, statistics.median(times[name]), images, memory,
                        (notes or {}).get(name, "")))
    print(f"measured {group}", file=sys.stderr, flush=True)
    return rows


def ig_rows(setup: Setup, compile: bool) -> list[Row]:
    import captum.attr as ca

    net = setup.model()
    f, params = fattr.functional(net)
    x = setup.images()
    t = torch.arange(setup.batch, device=setup.device) % 1000
    steps = 8 if setup.small else 50
    chunk = setup.batch * steps // 5  # five equal chunks: no recompiles for the last one
    alphas, _ = fattr.core.quadrature.quadrature("gausslegendre", steps, x)
    points = (alphas.view(-1, 1, 1, 1, 1) * x).reshape(-1, *x.shape[1:])
    index = t.repeat(steps)[:, None]

    def raw(model=net):
        for part in range(0, len(points), chunk):
            v = points[part:part + chunk].clone().requires_grad_()
            torch.autograd.grad(model(v).gather(1, index[part:part + chunk]).sum(), v)

    ig = fattr.integrated_gradients(f, steps=steps, batch_size=chunk)
    cig = ca.IntegratedGradients(net)
    fns = {"raw forward+backward of the same points": raw,
           "fattr integrated_gradients": lambda: ig(params, x, t),
           "captum IntegratedGradients": lambda: cig.attribute(
               x, target=t, n_steps=steps, internal_batch_size=chunk)}
    rows = measure(setup, f"IG, {steps} steps, batch {setup.batch}", fns, setup.batch)
    if compile:
        backend = "aot_eager" if setup.device.type == "cpu" else "inductor"
        compiled_f = torch.compile(f, backend=backend)
        compiled_net = torch.compile(net, backend=backend)
        cig_c = ca.IntegratedGradients(compiled_net)
        ig_c = fattr.integrated_gradients(compiled_f, steps=steps, batch_size=chunk)
        start = time.perf_counter()
        rows += measure(setup, f"IG, {steps} steps, batch {setup.batch}, torch.compile "
                               f"({backend})", {
                            "raw forward+backward (compiled model)": lambda: raw(compiled_net),
                            "fattr integrated_gradients (compiled model function)":
                                lambda: ig_c(params, x, t),
                            "captum IntegratedGradients (compiled model)": lambda: cig_c.attribute(
                                x, target=t, n_steps=steps, internal_batch_size=chunk)},
                        setup.batch)
        print(f"compiled IG section: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def cam_rows(setup: Setup) -> list[Row]:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam import methods as torchcam

    net = setup.model()
    f, params = fattr.functional(net)
    rows = []
    cases = [("GradCAM", fattr.gradcam, GradCAM, torchcam.GradCAM),
             ("GradCAM++", fattr.gradcam_plus_plus, GradCAMPlusPlus, torchcam.GradCAMpp),
             ("LayerCAM", fattr.layercam, LayerCAM, torchcam.LayerCAM),
             ("ScoreCAM", fattr.scorecam, ScoreCAM, torchcam.ScoreCAM)]
    for name, ours, grad_cam, torch_cam in cases:
        score = name == "ScoreCAM"
        batch = 2 if score else setup.batch
        x = setup.images(batch)
        targets = [int(c) for c in torch.arange(batch) % 1000]
        kwargs = {"batch_size": 128} if score else {}
        attr = ours(f, "layer4", **kwargs)

        def peer(cls=grad_cam, x=x, targets=targets, score=score):
            with cls(model=net, target_layers=[net.layer4]) as cam:
                if score:
                    cam.batch_size = 128
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in targets])

        def other(cls=torch_cam, x=x, targets=targets, score=score):
            extra = {"batch_size": 128} if score else {}
            with cls(net, target_layer="layer4", input_shape=tuple(x.shape[1:]),
                     **extra) as cam:
                with torch.set_grad_enabled(not score):
                    scores = net(x)
                return cam(class_idx=targets, scores=scores)

        rows += measure(setup, f"{name}, layer4, batch {batch}", {
            f"fattr {ours.__name__}": lambda attr=attr, x=x, targets=targets: attr(
                params, x, targets),
            f"pytorch-grad-cam {name}": peer, f"torchcam {name}": other}, batch)
    return rows


def lrp_rows(setup: Setup) -> list[Row]:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    net = setup.model()
    f, params = fattr.functional(net)
    x = setup.images()
    t = torch.arange(setup.batch, device=setup.device) % 1000
    one_hot = torch.nn.functional.one_hot(t, 1000).float()
    lrp = fattr.lrp(f, "epsilon_plus_flat")

    def zennit():
        with Gradient(net, EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
            return attributor(x, lambda out: one_hot * out)[1]

    return measure(setup, f"LRP epsilon_plus_flat, batch {setup.batch}", {
        "fattr lrp": lambda: lrp(params, x, t), "zennit Gradient(EpsilonPlusFlat)": zennit},
        setup.batch)


def perturbation_rows(setup: Setup) -> list[Row]:
    import captum.attr as ca

    net = setup.model()
    f, params = fattr.functional(net)
    batch = 2 if setup.small else 4
    x = setup.images(batch)
    t = torch.arange(batch, device=setup.device)
    window, stride = ((3, 8, 8), (3, 8, 8)) if setup.small else ((3, 16, 16), (3, 8, 8))
    cell = 8 if setup.small else 14
    side = setup.size // cell
    mask = torch.arange(side * side, device=setup.device).reshape(side, side)
    mask = mask.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[None, None]
    occ, abl = fattr.occlusion(f, window, stride), fattr.feature_ablation(f)
    rows = measure(setup, f"Occlusion {window} stride {stride}, batch {batch}", {
        "fattr occlusion (default batch_size)": lambda: occ(params, x, t),
        "captum Occlusion (default perturbations_per_eval=1)": lambda: ca.Occlusion(
            net).attribute(x, sliding_window_shapes=window, strides=stride, target=t)},
        batch, rounds=2)
    rows += measure(setup, f"Feature ablation, {side * side} superpixels, batch {batch}", {
        "fattr feature_ablation (default batch_size)": lambda: abl(params, x, t,
                                                                   feature_mask=mask),
        "captum FeatureAblation (default perturbations_per_eval=1)": lambda: ca.FeatureAblation(
            net).attribute(x, target=t, feature_mask=mask)}, batch, rounds=2)
    return rows


def guided_ig_rows(setup: Setup) -> list[Row]:
    import saliency.core as pair

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                        nn.Flatten(), nn.Linear(256, 10)).to(setup.device).eval()
    f, params = fattr.functional(net)
    steps = 10 if setup.small else 50
    x = torch.randn(8, 3, 32, 32, device=setup.device)
    t = torch.arange(8, device=setup.device)
    base = np.zeros((3, 32, 32), dtype=np.float32)

    def gradients(target: int):
        def call(batch, call_model_args=None, expected_keys=None):
            v = torch.tensor(np.asarray(batch), dtype=torch.float32,
                             device=setup.device).requires_grad_()
            (grad,) = torch.autograd.grad(net(v)[:, target].sum(), v)
            return {pair.INPUT_OUTPUT_GRADIENTS: grad.cpu().numpy()}
        return call

    gig = fattr.guided_integrated_gradients(f, steps=steps)
    images = x.cpu().numpy()
    with pair_on_numpy2():
        return measure(setup, f"Guided IG, small CNN 32x32, batch 8, {steps} steps", {
            "fattr guided_integrated_gradients": lambda: gig(params, x, t),
            "PAIR GuidedIG (one image at a time)": lambda: [
                pair.GuidedIG().GetMask(images[b], gradients(b), x_baseline=base,
                                        x_steps=steps)
                for b in range(8)]}, 8, rounds=2)


def markdown(rows: list[Row], device: str) -> str:
    lines = [f"Device: {device}. Per group, the speed-up is the group's slowest row's time "
             "over this row's (higher is faster).", "",
             "| case | implementation | time (s) | images/s | speed-up | peak MB | note |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        slowest = max((r.seconds for r in members if r.seconds == r.seconds), default=1.0)
        for r in members:
            if r.seconds != r.seconds:  # failed
                lines.append(f"| {group} | {r.name} | - | - | - | - | {r.note} |")
                continue
            lines.append(f"| {group} | {r.name} | {r.seconds:.4f} | {r.images / r.seconds:.1f} "
                         f"| {slowest / r.seconds:.2f}x | {r.memory_mb:.0f} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes, to check the script")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(options.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("gpu.py: no CUDA device; pass --device cpu --small to check it.")
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    setup = Setup(device, options.small)
    start = time.perf_counter()
    rows = []
    for part in (lrp_rows, cam_rows, perturbation_rows, guided_ig_rows):
        rows += part(setup)
    rows = ig_rows(setup, compile=not options.no_compile) + rows
    table = markdown(rows, f"{name}, torch {torch.__version__}"
                           f"{', small sizes' if options.small else ''}")
    table += f"\n\nWhole suite: {time.perf_counter() - start:.0f} s.\n"
    print(table)
    if options.out is not None:
        options.out.write_text(table)


if __name__ == "__main__":
    main()
