"""Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ on gradients averaged over noisy inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.cam.engine import LayerCam, Reshape, Upsample, spatial
from fattr.core.call import Call
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.inputs import rows_of
from fattr.core.model import ModelFn, Params
from fattr.layers.taps import LayerSpec


def smoothed_plus_plus(a: Tensor, g: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ from moments of the layer gradient: mean G, mean G^2, mean G^3 (B, C, *s).

    With one noise-free sample (g2 = g^2, g3 = g^3) this is `gradcam_plus_plus`'s map.
    """
    axes = spatial(a)
    alpha = g2 / (2 * g2 + a.sum(axes, keepdim=True) * g3 + 1e-6)
    alpha = torch.where(g2 != 0, alpha, torch.zeros_like(alpha))
    weights = (F.relu(g) * alpha).sum(axes, keepdim=True)
    return (weights * a).sum(1)


def smooth_gradcam_plus_plus(f: ModelFn, layer: LayerSpec, samples: int = 4,
                             stdev: float = 0.3, relu: bool = True, upsample: Upsample = True,
                             batch_size: int | None = None, *, reshape: Reshape = None,
                             output: Callable[[Any], Tensor] | None = None,
                             ) -> Callable[..., Tensor]:
    """Smooth Grad-CAM++: Grad-CAM++ whose gradient terms are averaged over noisy inputs.

        G_s = dy_t/dA at x + e_s,   e_s ~ N(0, stdev^2)   (s = 1..samples, absolute stdev)
        D1 = mean_s G_s,   D2 = mean_s G_s^2,   D3 = mean_s G_s^3,   A = the layer at x
        alpha_cij = D2_cij / (2 D2_cij + sum_kl A_ckl * D3_cij + 1e-6)   (0 where D2 = 0)
        w_c = sum_ij alpha_cij ReLU(D1_cij),   map = ReLU(sum_c w_c A_c)

    With stdev=0 this is `fattr.gradcam_plus_plus`. All samples * B noisy inputs go
    through the model in chunks of `batch_size` (one forward and backward per chunk, never a
    loop over samples); the moments are summed per example as the chunks come.

    Args: as `fattr.gradcam`, plus
        samples: noisy copies per example (default 4, as torchcam).
        stdev: standard deviation of the Gaussian input noise, in input units (default 0.3,
            as torchcam; NOT relative to the value range as `fattr.smoothgrad`'s).
        batch_size: the most noisy inputs per forward call (default None: all at once). The
            result does not depend on it.

    Returns `attr(params, x, target=None, *, generator=None)` -> (B, 1, H, W) raw maps (the
    layer's size without `upsample`), differentiable in params and x. The noise is drawn
    once per call as `stdev * torch.randn((samples, *x.shape), generator=generator)` (the
    global RNG if None), so the same generator state gives the same map for any batch_size.
    Under `vmap` (e.g. over targets) pass `randomness="same"` to vmap.

    >>> cam = fattr.smooth_gradcam_plus_plus(f, "layer4", samples=8, stdev=0.2)
    >>> maps = cam(params, x, target=labels, generator=torch.Generator().manual_seed(0))

    Differences from torchcam 0.5.0's SmoothGradCAMpp (same defaults, same noise, same
    averaged D2 and D3): torchcam's alpha denominator sums A * D3 over positions
    (sum_kl A_ckl D3_ckl, also in its GradCAMpp) where the paper's Eq. 19 has
    sum_kl A_ckl * D3_cij, and its eps is 1e-8; and it weights ReLU of the LAST noisy sample's
    gradient and combines the LAST noisy sample's activations (the state left in its hooks),
    where fattr uses the averaged gradient D1 (the paper) and the activations of the clean
    input. The maps agree exactly without noise on a layer whose gradient is constant over
    positions (the last layer before global pooling), up to the eps.

    Omeiza, Speakman, Cintas, Weldermariam, "Smooth Grad-CAM++: An Enhanced Inference Level
    Visualization Technique for Deep Convolutional Neural Network Models" (2019),
    https://arxiv.org/abs/1908.01224
    """
    method = "smooth_gradcam_plus_plus"
    check_count(samples, "samples", method)
    check_non_negative(stdev, "stdev", method)
    check_batch_size(batch_size, method)
    cam = LayerCam(f, layer, relu, upsample, reshape, output, method)

    def compute(params: Params, call: Call, *, generator: torch.Generator | None = None,
                ) -> Tensor:
        check_generator(generator, method)
        x, *others = call.inputs  # the noise goes on the first input
        noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype,
                            device=x.device)

        def moments(step: Tensor, example: Tensor) -> Tensor:
            noisy = (x[example] + stdev * noise[step, example], *rows_of(others, example))
            g = cam.maps(params, call, noisy, example)[1]
            return torch.stack((g, g.square(), g.pow(3)), 1) / samples

        total = path_sum(moments, samples, call.batch, batch_size, x.device)
        g, g2, g3 = total.unbind(1)
        return cam.finish(smoothed_plus_plus(cam.activations(params, call), g, g2, g3), call)

    return cam.attribution(compute, smooth_gradcam_plus_plus.__doc__, gradient=True)
