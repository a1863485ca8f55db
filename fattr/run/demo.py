"""The demo: train a CNN on digits in seconds, attribute a few test digits, write a PNG."""

from __future__ import annotations

import time
from pathlib import Path

import torch

import fattr
from fattr.data.digits import accuracy, trained_digits_cnn


def demo(out: str | Path = "out/demo", examples: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Train, explain and plot; returns the attributions by method name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, (_, _, x_test, y_test) = trained_digits_cnn(seed)
    print(f"trained a digits CNN in {time.perf_counter() - start:.1f}s: "
          f"test accuracy {accuracy(model, x_test, y_test):.3f}")

    f, params = fattr.functional(model)
    x, target = x_test[:examples], y_test[:examples]
    maps = {
        "integrated_gradients": fattr.integrated_gradients(f, steps=64)(params, x, target),
        "smoothgrad": fattr.smoothgrad(fattr.saliency(f), samples=32, stdev=0.15)(
            params, x, target, generator=torch.Generator().manual_seed(seed)),
    }
    gap = fattr.completeness_gap(f, params, x, maps["integrated_gradients"], target)
    logit = f(params, x).gather(1, target[:, None]).squeeze(1)
    print("integrated gradients completeness: sum(attr) - (f(x) - f(0)) per digit")
    for label, g, z in zip(target.tolist(), gap.tolist(), logit.tolist()):
        print(f"  digit {label}: logit {z:7.3f}  gap {g:+.2e}")
    path = out / "digits_attributions.png"
    _plot(x, target, maps, path)
    print(f"wrote {path}")
    return maps


def _plot(x: torch.Tensor, target: torch.Tensor, maps: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(maps) + 1
    fig, axes = plt.subplots(rows, len(x), figsize=(1.6 * len(x), 1.7 * rows), squeeze=False)
    for j in range(len(x)):
        axes[0, j].imshow(x[j, 0], cmap="gray")
        axes[0, j].set_title(f"digit {target[j].item()}", fontsize=8)
        for i, (name, a) in enumerate(maps.items(), start=1):
            m = a[j, 0]
            limit = m.abs().max().item() or 1.0
            axes[i, j].imshow(m, cmap="bwr", vmin=-limit, vmax=limit)
            if j == 0:
                axes[i, j].set_ylabel(name.replace("_", "\n"), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
