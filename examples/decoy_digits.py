"""Right for the right reasons (Ross et al. 2017, https://arxiv.org/abs/1703.03717) on Decoy
Digits: 8x8 digits on a 16x16 canvas, a 4x4 patch in a random corner whose shade (1 - 0.1 y)
gives the class away in training and shows a wrong class in the swapped test set. A plain CNN
takes the shortcut; trained on CE + lam * sum_{corners} A(x)^2 (A by fattr INSIDE the loss,
differentiated in the params by torch.func.grad) it learns the digits: docs/training_losses.md.

Run: .venv/bin/python examples/decoy_digits.py
"""

import torch
from torch import nn

import fattr
from fattr.run.digits import load_digits

LAM = {"saliency": 0.01, "integrated_gradients": 10.0, "gradcam": 3e4, "lrp": 100.0}
PATCHES = torch.zeros(4, 16, 16)  # where a patch can be; the penalty covers all four
PATCHES[0, :4, :4] = PATCHES[1, :4, 12:] = PATCHES[2, 12:, :4] = PATCHES[3, 12:, 12:] = 1
CORNERS = PATCHES.sum(0)


def decoy_digits(seed=0):
    """A patch of shade 1 - 0.1 c in a random corner: c the class, in swapped tests a wrong one."""
    x_train, y_train, x_test, y_test = load_digits(seed)
    g = torch.Generator().manual_seed(seed)
    patch = lambda x, c: nn.functional.pad(x, (4,) * 4) + PATCHES[
        torch.randint(0, 4, (len(x),), generator=g), None] * (1 - 0.1 * c[:, None, None, None])
    wrong = (y_test + torch.randint(1, 10, y_test.shape, generator=g)) % 10
    return {"x_train": patch(x_train, y_train), "y_train": y_train, "y_test": y_test,
            "x_clean": patch(x_test, y_test), "x_swapped": patch(x_test, wrong)}


def attribution(f, penalty):  # attr(params, x, y): the map kept out of the corners
    attr = {"saliency": lambda: fattr.saliency(f, abs=False),
            "integrated_gradients": lambda: fattr.integrated_gradients(f, steps=4),
            "gradcam": lambda: fattr.gradcam(f, "1", relu=False),  # a ReLU would hide evidence
            "lrp": lambda: fattr.lrp(f, "epsilon")}[penalty]()
    log_probs = lambda out: out.log_softmax(-1).sum(-1)  # Ross et al.'s objective
    return lambda p, x, y: attr(p, x, y if penalty == "lrp" else log_probs)


def train(data, penalty=None, epochs=12, seed=0, lr=3e-3):
    """Adam on CE (+ LAM[penalty] * the corner penalty); gradients by torch.func.grad."""
    torch.manual_seed(seed)
    f, params = fattr.functional(nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10)))
    attr = attribution(f, penalty) if penalty else lambda w, x, y: torch.zeros_like(x)
    loss = lambda w, x, y: nn.functional.cross_entropy(f(w, x), y) + LAM.get(penalty, 0.0) * (
        attr(w, x, y) * CORNERS).pow(2).sum((1, 2, 3)).mean()  # the attribution in the loss
    optimizer, order = torch.optim.Adam(params.values(), lr=lr), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for b in torch.randperm(len(data["y_train"]), generator=order).split(64):
            grads = torch.func.grad(loss)(params, data["x_train"][b], data["y_train"][b])
            for w, g in zip(params.values(), grads.values()):
                w.grad = g
            optimizer.step()
    return f, params


def accuracies(plain, fixed, data):
    acc = lambda f, p, x: (f(p, x).argmax(1) == data["y_test"]).float().mean().item()
    return {f"{name}_{kind}_acc": acc(*model, data[f"x_{kind}"]) for name, model in
            (("plain", plain), ("rrr", fixed)) for kind in ("clean", "swapped")}


def run(seed=0, penalty="saliency", epochs=12):
    """plain_clean_acc, plain_swapped_acc, rrr_clean_acc, rrr_swapped_acc (fastest on 1 thread)."""
    data = decoy_digits(seed)
    return accuracies(train(data, None, epochs, seed), train(data, penalty, epochs, seed), data)


def main(seed=0, epochs=12, figure="docs/decoy_digits.png"):
    """Every penalty against one plain model; `figure`: maps of swapped digits, plain and fixed."""
    data, maps, results = decoy_digits(seed), {}, {}
    plain, x, y = train(data, None, epochs, seed), data["x_swapped"][:4], data["y_test"][:4]
    for penalty, label in zip(LAM, ("saliency", "IG", "Grad-CAM", "LRP")):
        fixed = train(data, penalty, epochs, seed)
        results[penalty] = accuracies(plain, fixed, data)
        print(f"{label:9s}", "  ".join(f"{k} {v:.3f}" for k, v in results[penalty].items()))
        maps.update({f"{label}\n{n}": attribution(f, penalty)(p, x, y).detach()
                     for n, (f, p) in (("plain", plain), ("fixed", fixed))})
    if figure:
        fattr.viz.save(fattr.viz.grid(maps, x, sign="absolute", size=1.3), figure)
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
