"""fattr.influence.tracin against captum's TracInCP, in one process on the same inputs.

The digits CNN (fattr.run.digits, float32) with 3 checkpoints saved during training, 32 test
digits, training rows repeated from scikit-learn's digits up to 2,000 and 20,000 rows. captum
runs TracInCP with sample_wise_grads_per_batch=True (its fast per-example gradients) and an
in-memory checkpoint loader (no disk reads); both use the same batch size and one intra-op
thread. Times are medians of CPU time (the machine is shared) over interleaved rounds;
ratios are captum / fattr. A second table times the per-example gradients alone.

    .venv/bin/python benchmarks/bench_influence.py [--quick]
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import median_times, peak_memory
from fattr.run.digits import digits_cnn, load_digits, train


def setup(seed: int = 0):
    x_train, y_train, x_test, y_test = load_digits(seed)
    torch.manual_seed(seed)
    model = digits_cnn()
    checkpoints = []
    for epoch in range(3):
        train(model, x_train, y_train, epochs=1, seed=epoch)
        checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model.eval(), checkpoints, (x_train, y_train, x_test[:32], y_test[:32])


def rows(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    reps = -(-n // len(x))
    return x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]


def compare(n: int, batch_size: int, rounds: int) -> dict[str, float]:
    model, checkpoints, (x_all, y_all, x_test, y_test) = setup()
    x, y = rows(x_all, y_all, n)
    rates = [1e-3, 1e-3, 1e-3]
    loss = nn.CrossEntropyLoss(reduction="sum")
    f, _ = fattr.functional(model)
    ours = fattr.influence.tracin(f, checkpoints, loss, learning_rates=rates,
                                  batch_size=batch_size)
    peer_model = copy.deepcopy(model)

    def load(module: nn.Module, i: int) -> float:
        module.load_state_dict(checkpoints[i])
        return rates[i]

    from captum.influence import TracInCP

    peer = TracInCP(peer_model, DataLoader(TensorDataset(x, y), batch_size=batch_size),
                    list(range(3)), checkpoints_load_func=load, loss_fn=loss,
                    batch_size=batch_size, sample_wise_grads_per_batch=True)
    a, b = ours(x, y, x_test, y_test), peer.influence((x_test, y_test))
    error = ((a - b).abs().max() / b.abs().max()).item()
    fns = {"captum": lambda: peer.influence((x_test, y_test)),
           "fattr": lambda: ours(x, y, x_test, y_test)}
    times = median_times(fns, rounds=rounds, warmup=1, clock=time.process_time)
    peaks = {name: peak_memory(fn) for name, fn in fns.items()}
    return {"rows": n, "batch_size": batch_size, "captum_s": times["captum"],
            "fattr_s": times["fattr"], "speedup": times["captum"] / times["fattr"],
            "captum_mb": peaks["captum"] / 2**20, "fattr_mb": peaks["fattr"] / 2**20,
            "max_rel_diff": error}


def engines(rows_: int = 500, rounds: int = 15) -> str:
    """Per-example gradients of one chunk at one checkpoint: fattr's two engines and captum's
    sample-wise hooks (the step that dominates TracIn)."""
    from captum._utils.gradient import _compute_jacobian_wrt_params_with_sample_wise_trick

    from fattr.core.model import as_model
    from fattr.influence.affine import affine_gradients, affine_layers
    from fattr.influence.gradients import per_example_gradients

    model, checkpoints, (x_all, y_all, _, _) = setup()
    x, y = rows(x_all, y_all, rows_)
    f, _ = fattr.functional(model)
    m = as_model(f, None, "tracin")
    loss = nn.CrossEntropyLoss(reduction="sum")
    names = [k for k, _ in model.named_parameters()]
    layers, params = affine_layers(m, names), checkpoints[0]
    peer_model = copy.deepcopy(model)
    peer_model.load_state_dict(params)
    fns = {
        "captum sample-wise hooks": lambda: _compute_jacobian_wrt_params_with_sample_wise_trick(
            peer_model, (x,), y, loss, "sum"),
        "fattr vmap(grad)": lambda: per_example_gradients(m, loss, params, names, x, y),
        "fattr one backward + unfold": lambda: affine_gradients(m, loss, params, layers, names,
                                                                x, y),
    }
    times = median_times(fns, rounds=rounds, warmup=2, clock=time.process_time)
    ref = times["captum sample-wise hooks"]
    lines = [f"| per-example gradients, {rows_} rows | time (ms) | captum / this |",
             "|---|---|---|"]
    lines += [f"| {k} | {v * 1e3:.1f} | {ref / v:.2f}x |" for k, v in times.items()]
    return "\n".join(lines)


def main(quick: bool = False) -> str:
    torch.set_num_threads(1)
    settings = [(2000, 500, 7)] if quick else [(2000, 64, 5), (2000, 500, 7), (2000, 2000, 7),
                                              (20000, 500, 3)]
    lines = ["| training rows | batch size | captum TracInCP (s) | fattr tracin (s) | speedup "
             "| peak MB captum / fattr | max rel. diff |", "|---|---|---|---|---|---|---|"]
    for n, batch_size, rounds in settings:
        r = compare(n, batch_size, rounds)
        lines.append(f"| {n:,} | {batch_size} | {r['captum_s']:.3f} | {r['fattr_s']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['captum_mb']:.0f} / {r['fattr_mb']:.0f} | "
                     f"{r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n\n" + engines()


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
