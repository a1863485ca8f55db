"""Beyond feature attribution on digits: training-data influence, a concept, adversarial attacks.

A digits CNN is trained for a few epochs with a checkpoint after each. Then:
  * `fattr.influence.tracin` (TracInCP) scores every training digit's influence on a few test
    digits; the strongest proponents (mostly the same digit, similar strokes) go in a figure;
  * `fattr.concepts.tcav_significance` tests a hand-made concept, a horizontal stroke at the
    top of the image (the bar of a 7), on the sevens, against random sets of training digits;
  * `fattr.robust.fgsm` and `pgd` give the test accuracy under attack in an Linf ball.

Run: .venv/bin/python examples/beyond_attribution_digits.py  (writes out/examples/influence.png)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import fattr
from fattr.run.digits import digits_cnn, load_digits, train


def strokes(n: int, generator: torch.Generator) -> torch.Tensor:
    """The concept: a 5-pixel stroke in the second row, at a random column, on faint noise."""
    x = 0.05 * torch.rand(n, 1, 8, 8, generator=generator)
    start = torch.randint(0, 3, (n,), generator=generator)[:, None]
    cols = torch.arange(8)
    x[:, 0, 1] = torch.where((cols >= start) & (cols < start + 5), 1.0, x[:, 0, 1])
    return x


def main(epochs: int = 6, queries: int = 4, top: int = 5, concept_rows: int = 40,
         random_sets: int = 8, epsilon: float = 0.1, out: Path = Path("out/examples")) -> dict:
    x_train, y_train, x_test, y_test = load_digits(0)
    torch.manual_seed(0)
    model, checkpoints, lr = digits_cnn(), [], 3e-3
    for epoch in range(epochs):  # Adam at lr 3e-3: TracIn's lr_c is the nominal rate
        train(model, x_train, y_train, epochs=1, lr=lr, seed=epoch)
        checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    f, params = fattr.functional(model.eval())

    loss = nn.CrossEntropyLoss(reduction="sum")
    tracin = fattr.influence.tracin(f, checkpoints, loss, learning_rates=lr, batch_size=512)
    pick = torch.stack([(y_test == d).nonzero()[0, 0] for d in range(queries)])  # a 0, a 1, ...
    x_query, y_query = x_test[pick], y_test[pick]
    values, rows = fattr.influence.top_k(tracin(x_train, y_train, x_query, y_query), top)
    same_label = (y_train[rows] == y_query[:, None]).float().mean().item()
    print(f"TracIn: {same_label:.0%} of the top-{top} proponents share the test digit's label")
    fig, axes = plt.subplots(queries, top + 1, figsize=(1.3 * (top + 1), 1.4 * queries),
                             squeeze=False)
    for i in range(queries):
        images = [(x_query[i], f"test: {y_query[i]}")] + [
            (x_train[j], f"{y_train[j]} ({v:.2g})") for j, v in zip(rows[i], values[i])]
        for ax, (image, title) in zip(axes[i], images):
            ax.imshow(image[0], cmap="gray_r")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    figure = fattr.viz.save(fig, Path(out) / "influence.png")

    g = torch.Generator().manual_seed(0)
    concept, order = strokes(concept_rows, g), torch.randperm(len(x_train), generator=g)
    randoms = [x_train[order[k * concept_rows:(k + 1) * concept_rows]]
               for k in range(random_sets)]
    sevens = x_test[y_test == 7]
    tcav = fattr.concepts.tcav_significance(f, params, "1", concept, randoms, sevens, 7,
                                            generator=g)  # "1": the first ReLU
    print(f"TCAV(top stroke, class 7) = {tcav.scores.mean():.2f} vs random "
          f"{tcav.random_scores.mean():.2f}, p = {tcav.p_value:.2g}")

    attacks = {"FGSM": fattr.robust.fgsm(f, epsilon, bounds=(0.0, 1.0)),
               "PGD": fattr.robust.pgd(f, epsilon, epsilon / 4, 10, bounds=(0.0, 1.0))}
    compare = fattr.robust.attack_comparator(f, attacks)
    accuracy = {k: v.mean.mean().item() for k, v in compare(params, x_test, y_test).items()}
    print("test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    return {"same_label": same_label, "figure": figure, "tcav": tcav, "accuracy": accuracy,
            "proponents": rows}


if __name__ == "__main__":
    torch.set_num_threads(1)  # an 8x8 CNN: one thread beats two that contend
    main()
