"""torch.func.vmap over attribution functions: K class maps in one call, per-example models.

fattr's methods are pure functions `attr(params, x, target)`, so `torch.func.vmap` applies:
- over targets: `vmap(ig, in_dims=(None, None, 0))(params, x, ts)` with ts of shape (K, B)
  gives the K maps of every example, (K, B, ...), equal to K separate calls;
- over examples: `fattr.per_example(f)` is the model as a function of ONE example, and
  `vmap(ig_one, in_dims=(None, 0, 0))(params, x, y)` equals the batched call;
- `batch_size` (the most model inputs per forward call) only bounds memory: SmoothGrad with the
  same generator seed gives the same map for every `batch_size`.
The script prints the largest absolute difference of each pair (float64, so they are ~1e-16).

Run: .venv/bin/python examples/vmap_targets_and_examples.py
"""

from __future__ import annotations

import torch
from torch.func import vmap

import fattr
from fattr.data.digits import digits_cnn, load_digits


def main(examples: int = 8, classes: int = 10, steps: int = 32) -> dict[str, float]:
    torch.manual_seed(0)
    model = digits_cnn().double().eval()  # random weights are enough to compare computations
    f, params = fattr.functional(model)
    x, y = (t[:examples] for t in load_digits(seed=0)[2:])
    x = x.double()
    ig = fattr.integrated_gradients(f, steps=steps)
    diffs = {}

    # 1. every class's map for every example in one call: targets (K, B) -> maps (K, B, 1, 8, 8)
    targets = torch.arange(classes)[:, None].expand(classes, examples)
    per_class = vmap(ig, in_dims=(None, None, 0))(params, x, targets)
    separate = torch.stack([ig(params, x, k) for k in range(classes)])
    diffs["vmap over targets vs K calls"] = (per_class - separate).abs().max().item()
    # each class's maps sum to f(x)_k - f(0)_k, up to the quadrature error of `steps` points
    rise = (f(params, x) - f(params, torch.zeros_like(x))).T[:classes]
    gap = (per_class.sum((2, 3, 4)) - rise).abs().max().item()

    # 2. a function of ONE example, vmapped over the batch, equals the batched call
    ig_one = fattr.integrated_gradients(fattr.per_example(f), steps=steps)
    diffs["vmap over per_example vs batched"] = (
        vmap(ig_one, in_dims=(None, 0, 0))(params, x, y) - ig(params, x, y)).abs().max().item()

    # 3. chunking: batch_size bounds the model inputs per forward, never the result
    def smooth_ig(batch_size):
        sg = fattr.smoothgrad(fattr.integrated_gradients(f, steps=steps, batch_size=batch_size),
                              samples=8, batch_size=batch_size)
        return sg(params, x, y, generator=torch.Generator().manual_seed(0))

    chunked, whole = smooth_ig(24), smooth_ig(None)
    diffs["SmoothGrad(IG) batch_size=24 vs None"] = (chunked - whole).abs().max().item()

    print(f"{examples} digits, {classes} classes, IG with {steps} steps, float64")
    for name, value in diffs.items():
        print(f"  max |difference|, {name}: {value:.1e}")
    print(f"  largest IG completeness gap over the {classes} x {examples} maps: {gap:.1e}")
    return {**diffs, "completeness gap": gap}


if __name__ == "__main__":
    main()
