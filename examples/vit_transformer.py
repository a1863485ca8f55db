"""LRP for a vision transformer (AttnLRP, CP-LRP) and a CAM on its tokens.

A small torchvision `VisionTransformer` (32 px images, 8 px patches, 2 layers, 2 heads, random
weights, float64) is explained three ways:
- `fattr.lrp(f, "cp_lrp")`: attention weights held constant, relevance only through the
  values (Ali et al. 2022). LRP-0 rules (`epsilon=0, stabilizer=0`) on a bias-free network
  CONSERVE relevance: the map sums to the logit.
- `fattr.lrp(f, "attnlrp")`: AttnLRP's softmax rule (Achtibat et al. 2024) sends relevance
  through q and k too; it does not conserve it exactly, the printed sums show by how much.
- `fattr.gradcam` on the tokens after the last block's first LayerNorm, with
  `reshape=fattr.tokens_to_grid(1)` (drop the class token, lay 16 patches out as 4x4).
Biases, the class token and the positional embedding are zeroed: like biases, they would keep
part of the relevance, so the sums could not be checked.

Run: .venv/bin/python examples/vit_transformer.py   (writes out/examples/vit.png)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import VisionTransformer

import fattr

OUT = Path("out/examples")
LRP0 = {"epsilon": 0.0, "stabilizer": 0.0}


def bias_free_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=32, mlp_dim=64, num_classes=5).double()
    with torch.no_grad():
        net.heads.head.weight.normal_(0, 0.5)  # torchvision starts the head at zero
        for name, p in net.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                p.zero_()
    return net.eval()


def main(batch: int = 4, out: Path = OUT) -> dict:
    f, params = fattr.functional(bias_free_vit())
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    logits = f(params, x)
    target = logits.argmax(1)
    logit = logits.gather(1, target[:, None]).squeeze(1)
    maps = {
        "CP-LRP": fattr.lrp(f, "cp_lrp", **LRP0)(params, x, target),
        "AttnLRP": fattr.lrp(f, "attnlrp", **LRP0)(params, x, target),
        "Grad-CAM tokens": fattr.gradcam(f, "encoder.layers.encoder_layer_1.ln_1",
                                         reshape=fattr.tokens_to_grid(1))(params, x, target),
    }
    sums = {name: maps[name].sum((1, 2, 3)) for name in ("CP-LRP", "AttnLRP")}
    print("relevance sums vs the explained logit, per image")
    print(f"{'logit':>14s}{'CP-LRP sum':>14s}{'AttnLRP sum':>14s}")
    for row in zip(logit.tolist(), sums["CP-LRP"].tolist(), sums["AttnLRP"].tolist()):
        print("".join(f"{value:14.6f}" for value in row))
    print(f"Grad-CAM on tokens: {tuple(maps['Grad-CAM tokens'].shape)} (upsampled 4x4 grid)")

    path = fattr.viz.save(fattr.viz.grid(maps, x), Path(out) / "vit.png")
    print(f"wrote {path}")
    return {"maps": maps, "logit": logit, "sums": sums, "figure": path}


if __name__ == "__main__":
    main()
