"""Quick start: train a small CNN on digits, explain it three ways, check IG's completeness.

Shows `fattr.functional`, `saliency`, `integrated_gradients`, `smoothgrad` wrapped around IG
(SmoothGrad over ANY attribution function), `completeness_gap` (sum of the IG map minus
f(x) - f(0), per example) and a `fattr.viz.grid` figure. The digits are scikit-learn's bundled
8x8 images, so nothing is downloaded.

Run: .venv/bin/python examples/quickstart.py      (writes out/examples/quickstart.png)
"""

from __future__ import annotations

from pathlib import Path

import torch

import fattr
from fattr.data.digits import accuracy, trained_digits_cnn

OUT = Path("out/examples")


def main(epochs: int = 10, examples: int = 6, steps: int = 64, samples: int = 16,
         out: Path = OUT) -> dict:
    """Train, attribute `examples` test digits, print the IG completeness gaps, save a grid."""
    model, (_, _, x_test, y_test) = trained_digits_cnn(seed=0, epochs=epochs)
    print(f"digits CNN, {epochs} epochs: test accuracy {accuracy(model, x_test, y_test):.3f}")

    f, params = fattr.functional(model)  # f(params, x) == model(x); params share storage
    x, y = x_test[:examples], y_test[:examples]
    ig = fattr.integrated_gradients(f, steps=steps)
    maps = {
        "saliency": fattr.saliency(f)(params, x, y),
        "integrated gradients": ig(params, x, y),
        "SmoothGrad(IG)": fattr.smoothgrad(ig, samples=samples, stdev=0.1)(
            params, x, y, generator=torch.Generator().manual_seed(0)),
    }

    # Completeness: sum(IG) = f(x)_y - f(0)_y up to the quadrature error of `steps` points.
    gap = fattr.completeness_gap(f, params, x, maps["integrated gradients"], y)
    rise = (f(params, x) - f(params, torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    print("integrated gradients: f(x) - f(0) for the label, and sum(IG) minus it")
    for label, delta, g in zip(y.tolist(), rise.tolist(), gap.tolist()):
        print(f"  digit {label}: f(x) - f(0) = {delta:7.3f}   gap {g:+.2e}")

    fig = fattr.viz.grid(maps, x, mode="heat")
    path = fattr.viz.save(fig, Path(out) / "quickstart.png")
    print(f"wrote {path}")
    return {"maps": maps, "gap": gap, "rise": rise, "figure": path}


if __name__ == "__main__":
    torch.set_num_threads(1)  # an 8x8 CNN: one thread beats two that contend
    main()
