"""Guided CAMs: any attribution times any upsampled CAM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, resize, upsample_mode
from fattr.cam.gradcam import gradcam
from fattr.core.call import AttributionFn, Contract, contract
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.taps import LayerSpec
from fattr.rules import guided_backprop


def guided(attr_fn: Callable[..., Tensor], cam_fn: Callable[..., Tensor],
           upsample: Upsample = "bilinear", *, name: str = "guided") -> Callable[..., Tensor]:
    """Any attribution times any CAM: fine detail from the first, class focus from the second.

        attr(x) = attr_fn(x) * up(cam_fn(x))

    The CAM (B, 1, *s) is resized to the attribution's spatial size when it differs (`upsample`
    picks the mode: "bilinear", the default, or "nearest" as captum's GuidedGradCam) and
    broadcast over its channels. Both functions get the same target; per-call arguments (such as
    `baseline=`) go to `attr_fn`. `fattr.guided_gradcam` is
    `guided(fattr.guided_backprop(f), fattr.gradcam(f, layer, upsample=False), "nearest")`.

    Returns `attr(params, x, target=None, **per_call) -> Tensor` shaped like `attr_fn`'s result.

    >>> a = fattr.guided(fattr.integrated_gradients(f), fattr.gradcam(f, "layer4"))
    >>> a(params, x, target=labels, baseline=0.0).shape == x.shape

    Selvaraju et al., "Grad-CAM" (2017), Section 3.1, https://arxiv.org/abs/1610.02391
    """
    for what, fn in (("attr_fn", attr_fn), ("cam_fn", cam_fn)):
        if not callable(fn):
            raise FattrTypeError(f"{name}: {what} must be an attribution function, got "
                                 f"{type(fn).__name__}.")
    inner = contract(attr_fn)
    per_example = inner.per_example
    if contract(cam_fn).per_example != per_example:
        raise FattrError(f"{name}: attr_fn and cam_fn must both be batched or both per-example "
                         "(built from fattr.per_example(f)).")
    mode = upsample_mode(upsample, name)
    if mode is None:
        raise FattrError(f"{name}: upsample=False cannot combine maps of different sizes; pass "
                         "'bilinear' or 'nearest'.")

    def attribute(params: Params, x: Any, target: TargetSpec = None, *, model_args: Any = (),
                  model_kwargs: dict[str, Any] | None = None, **per_call: Any) -> Tensor:
        given = model_args != () or model_kwargs is not None  # plain functions may not take them
        extra = dict(model_args=model_args, model_kwargs=model_kwargs) if given else {}
        a = attr_fn(params, x, target, **extra, **per_call)
        if isinstance(a, tuple):
            raise FattrError(f"{name}: combines ONE attribution map with a CAM, but x is a tuple "
                             f"of {len(a)} inputs. Multiply the input you want by the CAM "
                             "yourself: attributions[i] * cam.")
        cam = cam_fn(params, x, target, **extra)
        if per_example:
            a, cam = a.unsqueeze(0), cam.unsqueeze(0)
        if cam.ndim != a.ndim or cam.shape[:2] != (a.shape[0], 1):
            raise FattrError(f"{name}: cam_fn must return one map per example, shape "
                             f"({a.shape[0]}, 1, ...) for an attribution of shape "
                             f"{tuple(a.shape)}; got {tuple(cam.shape)}.")
        result = a * resize(cam, a.shape[2:], mode, name)
        return result.squeeze(0) if per_example else result

    keywords = None if inner.keywords is None else inner.keywords
    return AttributionFn(attribute, name, Contract(per_example, inner.batched_kwargs, keywords),
                         guided.__doc__)


def guided_gradcam(f: ModelFn, layer: LayerSpec, *, reshape: Reshape = None,
                   output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Guided Grad-CAM: guided backpropagation times the nearest-upsampled ReLU Grad-CAM.

        attr = guided_backprop(x) * nearest_up(ReLU(sum_c w_c A_c))

    As captum's GuidedGradCam (relu on, nearest interpolation). Built as
    `guided(fattr.guided_backprop(f), fattr.gradcam(f, layer, upsample=False), "nearest")`.

    Args:
        f: a model function from `fattr.functional` (guided backprop rewrites its module tree).
        layer, reshape, output: as `fattr.gradcam`.

    Returns `attr(params, x, target=None) -> Tensor` shaped like x.

    torch.compile: the rules are custom autograd Functions, which Dynamo does not trace (nor
    inside vmap, pytorch issue 129845): a compiled call breaks the graph at each rule and runs
    them eagerly (same values); fullgraph=True fails. For one compiled graph:
    `fattr.guided(fattr.guided_backprop(f, mode="hook"), fattr.gradcam(f, layer,
    upsample=False), "nearest")`.

    >>> a = fattr.guided_gradcam(f, "layer4")(params, x, target=labels)

    Selvaraju et al., "Grad-CAM" (2017), https://arxiv.org/abs/1610.02391
    """
    as_model(f, output, "guided_gradcam").require_module()  # its own name in the errors
    cam = gradcam(f, layer, relu=True, upsample=False, reshape=reshape, output=output)
    combined = guided(guided_backprop(f, output=output), cam, "nearest", name="guided_gradcam")
    combined.__doc__ = guided_gradcam.__doc__
    return combined
