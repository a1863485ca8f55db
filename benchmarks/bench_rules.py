"""Modified backprop against a plain forward + backward and against captum, in one process.

torchvision resnet18 (random weights, float32) at 64x64, batch 8, and at 224x224, batch 2.
Each fattr method is timed against one raw forward + backward to the input of the same batch
(for DeepLIFT: the doubled batch it runs; for DeepLiftShap with 4 references: 2 * 4 * B rows),
and against captum's hook-based version on the same inputs (captum's DeepLift needs a ResNet
whose blocks do not reuse their ReLU, issue 1082; it gets one, with the same function).

Times are medians of CPU time (`time.process_time`) over interleaved rounds, on ONE thread:
the 2-core machine this runs on is shared with other jobs, and wall time there measures them
more than us. One thread also keeps the harness's forked memory child from hanging (a child
forked after the parent ran a multi-threaded kernel blocks in its first one). Peak memory comes
from `benchmarks.harness.compare`.

    .venv/bin/python benchmarks/bench_rules.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import captum.attr as ca
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown, median_times
from tests.conftest import randomize_batchnorm
from tests.rules.captum_reference import dedupe_relus


def tables(batch: int, size: int, references: int = 4, rounds: int = 5,
           shap: bool = True) -> str:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    randomize_batchnorm(net)
    net = net.eval()
    f, params = fattr.functional(net)
    x = torch.randn(batch, 3, size, size)
    baselines = torch.randn(references, 3, size, size) * 0.1
    target = torch.arange(batch) % 10
    captum_net = dedupe_relus(net)

    def raw(rows: int):
        inputs = x.repeat(rows // batch, 1, 1, 1)
        index = target.repeat(rows // batch)[:, None]

        def run():
            v = inputs.clone().requires_grad_()
            return torch.autograd.grad(net(v).gather(1, index).sum(), v)[0]

        return run

    def fattr_call(method, **kw):
        return lambda: method(params, x, target, **kw)

    groups = {
        "guided_backprop": ({
            "fattr (function)": fattr_call(fattr.guided_backprop(f)),
            "fattr (hook)": fattr_call(fattr.guided_backprop(f, mode="hook")),
            "captum GuidedBackprop": lambda: ca.GuidedBackprop(net).attribute(x, target=target),
        }, batch),
        "deconvnet": ({
            "fattr (function)": fattr_call(fattr.deconvnet(f)),
            "fattr (hook)": fattr_call(fattr.deconvnet(f, mode="hook")),
            "captum Deconvolution": lambda: ca.Deconvolution(net).attribute(x, target=target),
        }, batch),
        "rectgrad": ({
            "fattr (function)": fattr_call(fattr.rectgrad(f)),
            "fattr (hook)": fattr_call(fattr.rectgrad(f, mode="hook")),
        }, batch),
        "deeplift": ({
            "fattr": fattr_call(fattr.deeplift(f), baseline=baselines[0]),
            "captum DeepLift": lambda: ca.DeepLift(captum_net).attribute(
                x, baselines[:1].expand_as(x), target=target),
        }, 2 * batch),
    }
    if shap:
        groups["deeplift_shap"] = ({
            "fattr": fattr_call(fattr.deeplift_shap(f), baselines=baselines),
            "captum DeepLiftShap": lambda: ca.DeepLiftShap(captum_net).attribute(
                x, baselines, target=target),
        }, 2 * references * batch)
    out = []
    for name, (fns, rows) in groups.items():
        reference = f"raw forward+backward ({rows} rows)"
        fns = {reference: raw(rows), **fns}
        times = median_times(fns, rounds, clock=time.process_time)
        table = compare(fns, reference=reference, rounds=1, warmup=0)  # for peak memory
        for row in table:
            row.update(time_s=times[row["name"]], time_ratio=times[row["name"]] / times[reference])
        out.append(markdown(table, f"{name}: resnet18, batch {batch}, {size}x{size}"))
    return "\n\n".join(out)


def main() -> str:
    torch.set_num_threads(1)
    return "\n\n".join([tables(8, 64, rounds=9), tables(2, 224, rounds=5, shap=False)])


if __name__ == "__main__":
    print(main())
