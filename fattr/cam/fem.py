"""FEM, the Feature Explanation Method (Fuad et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.engine import LayerCam, Reshape, Upsample, spatial
from fattr.core.call import Call
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec


def fem(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
        k: float = 2.0, reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
        ) -> Callable[..., Tensor]:
    """FEM: channels weighted by the fraction of positions where they fire unusually strongly.

        w_c = mean_ij 1[A_cij > mean(A_c) + k std(A_c)],   map = ReLU(sum_c w_c A_c)

    (std with ddof 0.) Gradient-free and class-agnostic: `target` is not used. Arguments and
    result as `fattr.gradcam`, plus `k` (default 2, the k-sigma rule).

    >>> maps = fattr.fem(f, "layer4")(params, x)

    Fuad, Martin, Giot, Bourqui, Benois-Pineau, Zemmari, "Features Understanding in 3D CNNs for
    Actions Recognition in Video" (2020), https://hal.science/hal-02963298
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k < float("inf"):
        raise FattrError(f"fem: k must be a finite number >= 0 (the k-sigma threshold, "
                         f"default 2), got {k!r}.")
    cam = LayerCam(f, layer, relu, upsample, reshape, output, "fem")

    def compute(params: Params, call: Call) -> Tensor:
        call.check_target(cam.model, params)
        a = cam.activations(params, call)
        axes = spatial(a)
        threshold = a.mean(axes, keepdim=True) + k * a.std(axes, correction=0, keepdim=True)
        weights = (a > threshold).to(a.dtype).mean(axes, keepdim=True)
        return cam.finish((weights * a).sum(1), call)

    return cam.attribution(compute, fem.__doc__)
