"""Are the maps faithful? Deletion, insertion and sparseness of three maps on the digits CNN.

`fattr.metrics.deletion` removes the most relevant pixels first (set to 0) and integrates the
target logit along the way: lower is better. `insertion` puts them back into a blurred digit:
higher is better. `sparseness` is the Gini index of |map| (1: one pixel, 0: uniform). The maps:
integrated gradients, |saliency| and a random map (the control every method must beat). Every
metric returns one value per example; the script prints the means over the test digits.

Run: .venv/bin/python examples/evaluate_faithfulness.py
"""

from __future__ import annotations

import torch

import fattr
from fattr.data.digits import trained_digits_cnn


def main(epochs: int = 10, examples: int = 48, steps: int = 16) -> dict[str, dict[str, float]]:
    model, (_, _, x_test, y_test) = trained_digits_cnn(seed=0, epochs=epochs)
    f, params = fattr.functional(model)
    x, y = x_test[:examples], y_test[:examples]
    maps = {
        "integrated gradients": fattr.integrated_gradients(f, steps=32)(params, x, y),
        "|saliency|": fattr.saliency(f)(params, x, y),
        "random": torch.rand(x.shape, generator=torch.Generator().manual_seed(0)),
    }
    metrics = {
        "deletion (lower)": lambda a: fattr.metrics.deletion(f, params, x, a, y, steps=steps),
        "insertion (higher)": lambda a: fattr.metrics.insertion(f, params, x, a, y, steps=steps),
        "sparseness": fattr.metrics.sparseness,
    }
    scores = {name: {metric: score(a).mean().item() for metric, score in metrics.items()}
              for name, a in maps.items()}

    print(f"{examples} test digits, {steps} removal steps; mean over the digits")
    print(f"{'map':22s}" + "".join(f"{metric:>20s}" for metric in metrics))
    for name, row in scores.items():
        print(f"{name:22s}" + "".join(f"{value:20.3f}" for value in row.values()))
    return scores


if __name__ == "__main__":
    torch.set_num_threads(1)  # an 8x8 CNN: one thread beats two that contend
    main()
