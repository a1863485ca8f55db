"""An attribution inside a training loss: "right for the right reasons" on digits.

A trained digits CNN is fine-tuned with the loss of Ross et al. (2017),

    L(w) = CE(f_w(x), y) + lam * sum_{pixels outside the region} (d sum_k log p_k(x) / dx)^2

where the input gradient comes from `fattr.saliency(f, abs=False)` with a callable target, and
`torch.func.grad` differentiates the whole loss, attribution included, in the parameters
(`fattr.trainable(f, params)`). The region here is the LEFT THIRD of the 8x8 image (columns
0-2): the model is asked to decide from those pixels only. The script prints, on the test set
before and after fine-tuning, the penalty (about 100x smaller after), the share of |input
gradient| outside the region (5/8 of the pixels; it falls from about 0.70 to 0.50) and the
accuracy (it stays near 0.97; a larger `lam` trades accuracy for a smaller penalty).

Ross, Hughes, Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by
Constraining their Explanations" (2017), https://arxiv.org/abs/1703.03717

Run: .venv/bin/python examples/attribution_in_the_loss.py
"""

from __future__ import annotations

import torch
from torch import nn

import fattr
from fattr.data.digits import trained_digits_cnn

OUTSIDE = torch.ones(1, 1, 8, 8)
OUTSIDE[..., :3] = 0.0  # 1 where attribution is penalized: every column but the left three


def log_probs(out: torch.Tensor) -> torch.Tensor:
    return out.log_softmax(-1).sum(-1)  # RRR's target: the summed log-probabilities


def evaluate(f, params, x, y) -> dict[str, float]:
    grad = fattr.saliency(f, abs=False)(params, x, log_probs)
    return {"penalty": (grad * OUTSIDE).pow(2).sum(dim=(1, 2, 3)).mean().item(),
            "outside share": ((grad.abs() * OUTSIDE).sum() / grad.abs().sum()).item(),
            "accuracy": (f(params, x).argmax(1) == y).float().mean().item()}


def main(pretrain_epochs: int = 10, epochs: int = 10, lam: float = 1e-2, lr: float = 3e-3,
         batch_size: int = 64) -> dict[str, dict[str, float]]:
    model, (x_train, y_train, x_test, y_test) = trained_digits_cnn(seed=0, epochs=pretrain_epochs)
    f, params = fattr.functional(model)
    saliency = fattr.saliency(f, abs=False)

    def loss(weights, x, y):
        p = {**params, **weights}
        penalty = (saliency(p, x, log_probs) * OUTSIDE).pow(2).sum(dim=(1, 2, 3)).mean()
        return nn.functional.cross_entropy(f(p, x), y) + lam * penalty

    before = evaluate(f, params, x_test, y_test)
    weights = {k: v.clone() for k, v in fattr.trainable(f, params).items()}  # module untouched
    optimizer = torch.optim.Adam(weights.values(), lr=lr)
    loss_grad = torch.func.grad(loss)  # through the attribution: a second-order gradient
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(x_train), generator=order).split(batch_size):
            for w, g in zip(weights.values(), loss_grad(weights, x_train[batch],
                                                        y_train[batch]).values()):
                w.grad = g
            optimizer.step()
    after = evaluate(f, {**params, **weights}, x_test, y_test)

    print(f"region: left third of the image; lam = {lam}, {epochs} epochs of fine-tuning")
    print(f"{'':16s}{'before':>10s}{'after':>10s}")
    for key in before:
        print(f"{key:16s}{before[key]:10.4f}{after[key]:10.4f}")
    return {"before": before, "after": after}


if __name__ == "__main__":
    torch.set_num_threads(1)  # an 8x8 CNN: one thread beats two that contend
    main()
