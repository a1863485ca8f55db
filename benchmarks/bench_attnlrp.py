"""CP-LRP and AttnLRP on a ViT against lxt (the AttnLRP authors' library), one process, same
inputs.

A torchvision VisionTransformer shaped like vit_b_16 but smaller (image 64, patch 16, 4 layers,
4 heads, hidden 128, MLP 512, 10 classes; random weights with a random head, float32), batch 8,
target logit as initial relevance. lxt runs its "efficient" CP-LRP for torchvision ViT
(`lxt.efficient.models.vit_torch.cp_LRP`: GELU, LayerNorm and MultiheadAttention patched at
class level, then x * the gradient); the patches are applied around each lxt call only and
always removed. fattr runs `fattr.lrp(f, "cp_lrp")` and `fattr.lrp(f, "attnlrp")` (one forward
and one backward: the rules change the gradient itself). A plain forward + backward to the
input gives the cost of one gradient for scale. One thread.

    .venv/bin/python benchmarks/bench_attnlrp.py
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import sys
import types
import warnings
from pathlib import Path

import torch
from torchvision.models import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown


def _lxt_cp_lrp() -> dict:
    """lxt's CP-LRP patch map for torchvision ViT, imported without lxt.efficient's package
    __init__ (it imports names this transformers version removed)."""
    import lxt

    root = pathlib.Path(lxt.__file__).parent / "efficient"
    for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    from lxt.efficient.models import vit_torch

    return vit_torch.cp_LRP


@contextlib.contextmanager
def patched(patches: dict):
    forwards = {cls: cls.__dict__["forward"] for cls in patches}
    try:
        for cls, patch in patches.items():
            patch(cls)
        yield
    finally:
        for cls, forward in forwards.items():
            cls.forward = forward
            if "original_forward" in cls.__dict__:
                delattr(cls, "original_forward")


SMALL = dict(image_size=64, patch_size=16, num_layers=4, num_heads=4, hidden_dim=128,
             mlp_dim=512)
# ViT-S/16's width at 224 px, 4 of its 12 blocks: where the layers' arithmetic dominates
WIDE = dict(image_size=224, patch_size=16, num_layers=4, num_heads=6, hidden_dim=384,
            mlp_dim=1536)


def model(config: dict = SMALL) -> torch.nn.Module:
    torch.manual_seed(0)
    net = VisionTransformer(**config, num_classes=10)
    with torch.no_grad():
        net.heads.head.weight.normal_(0, 0.1)
    return net.eval()


def table(config: dict, batch: int, rounds: int) -> str:
    patches = _lxt_cp_lrp()
    net = model(config)
    peer = copy.deepcopy(net)
    f, params = fattr.functional(net)
    size = config["image_size"]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    target = torch.arange(batch) % 10
    cp, attn = fattr.lrp(f, "cp_lrp"), fattr.lrp(f, "attnlrp")

    def lxt_cp_lrp():
        with patched(patches):
            v = x.clone().requires_grad_()
            peer(v).gather(1, target[:, None]).sum().backward()
            return (v * v.grad).detach()

    def gradient():
        v = x.clone().requires_grad_()
        return torch.autograd.grad(net(v).gather(1, target[:, None]).sum(), v)[0]

    theirs = lxt_cp_lrp()
    error = float((cp(params, x, target) - theirs).abs().max() / theirs.abs().max())
    fns = {"fattr cp_lrp": lambda: cp(params, x, target), "lxt CP-LRP": lxt_cp_lrp,
           "fattr attnlrp": lambda: attn(params, x, target), "plain gradient": gradient}
    rows = compare(fns, reference="lxt CP-LRP", rounds=rounds, warmup=2)
    title = (f"ViT ({size} px, patch 16, {config['num_layers']} layers, hidden "
             f"{config['hidden_dim']}), batch {batch}, float32, one thread: time and peak "
             "memory relative to lxt CP-LRP")
    return (markdown(rows, title)
            + "\n\nfattr cp_lrp vs lxt CP-LRP, float32, max relative difference: "
            f"{error:.1e} (float32 rounding; lxt's identity rule divides by x + 1e-10)")


def main() -> str:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    return "\n\n".join([table(SMALL, batch=8, rounds=9), table(WIDE, batch=2, rounds=5)])


if __name__ == "__main__":
    print(main())
