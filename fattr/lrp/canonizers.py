"""Canonizers: a copy of the model in the form LRP rules expect; the user's model is untouched.

- Eval-mode BatchNorm right after a Linear/conv layer (in module order, as zennit's
  `SequentialMergeBatchNorm`) is folded into it: the layer becomes `MergedLinear`, which
  computes w * s and (b - mean) * s + beta, s = gamma / sqrt(var + eps), FROM THE CALL'S
  PARAMETERS at every call, and the BatchNorm becomes `MergedBatchNorm`, an identity that keeps
  its tensors under their names (so the canonized tree takes the user's params dict).
- The residual add of torchvision ResNet blocks becomes a `Sum` module over the stacked
  branches (zennit's ResNetCanonizer), which the composites give the Norm rule.
- In-place modules (`inplace=True`) become out-of-place copies.

`canonical(module)` is the canonizers as one `rewrite` rule, so they cost one tree copy and
compose with a composite's rules; `canonize(module)` applies them alone.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from fattr.errors import FattrError
from fattr.lrp.layers import BATCHNORMS, LINEAR_LAYERS, TRANSPOSED, affine
from fattr.rules.rewrite import RuleModule, rewrite

Match = Callable[[str, nn.Module], "nn.Module | None"]


class Sum(nn.Module):
    """Sums the stacked branches of a residual connection: `x.sum(-1)` (zennit's `Sum`)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(-1)


@functools.cache
def _residual_blocks() -> dict[type, type]:
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # torchvision is optional: without it there are no such blocks
        return {}

    class SumBasicBlock(BasicBlock):
        """torchvision's BasicBlock with its residual add as a `Sum` module."""

        def forward(self, x: Tensor) -> Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(self.residual_sum(torch.stack([identity, out], dim=-1)))

    class SumBottleneck(Bottleneck):
        """torchvision's Bottleneck with its residual add as a `Sum` module."""

        def forward(self, x: Tensor) -> Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(self.residual_sum(torch.stack([identity, out], dim=-1)))

    return {BasicBlock: SumBasicBlock, Bottleneck: SumBottleneck}


def fold(layer: nn.Module, params: Mapping[str, Tensor], bn: nn.Module,
         bn_tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(weight, bias) of `layer` (its tensors `params`) followed by eval BatchNorm `bn`."""
    scale = bn_tensors["running_var"].add(bn.eps).rsqrt()
    if "weight" in bn_tensors:
        scale = scale * bn_tensors["weight"]
    shift = -bn_tensors["running_mean"] * scale
    if "bias" in bn_tensors:
        shift = shift + bn_tensors["bias"]
    weight, bias = params["weight"], params.get("bias")
    if isinstance(layer, TRANSPOSED):  # weight (in, out / groups, *kernel)
        groups, kernel = layer.groups, weight.shape[2:]
        grouped = weight.reshape(groups, -1, weight.shape[1], *kernel)
        weight = (grouped * scale.reshape(groups, 1, -1, *[1] * len(kernel))).reshape(weight.shape)
    else:  # weight (out, in / groups, *kernel)
        weight = weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
    return weight, shift if bias is None else bias * scale + shift


class MergedBatchNorm(RuleModule):
    """A BatchNorm folded into the layer before it: the identity, keeping its tensors.

    It checks at every call that its input is what its layer just produced, so a model whose
    module order does not follow its execution order fails loudly instead of folding wrongly.
    """

    def __init__(self, bn: nn.Module, name: str, layer_name: str):
        super().__init__(bn)
        self.name, self.layer_name = name, layer_name
        object.__setattr__(self, "expected", None)
        keep_children(self, bn)

    def expect(self, y: Tensor) -> None:
        object.__setattr__(self, "expected", y)

    def forward(self, x: Tensor) -> Tensor:
        expected = self.expected
        object.__setattr__(self, "expected", None)
        if x is not expected:
            raise FattrError(
                f"lrp: BatchNorm '{self.name}' follows '{self.layer_name}' in the module order, "
                f"so it was folded into it, but its input is not that layer's output. Register "
                "modules in execution order, or pass canonize=False and map BatchNorm to a rule.")
        return run_children(self, x)


def keep_children(replacement: RuleModule, bn: nn.Module) -> None:
    """A BatchNorm with submodules (timm's BatchNormAct2d: BatchNorm, then its `drop` and `act`)
    keeps them, under their names, to run after the normalization and get their own rules."""
    if isinstance(bn, BATCHNORMS) and bn._modules:
        replacement._modules.update(bn._modules)
        replacement.rewrite_children = True


def run_children(module: nn.Module, x: Tensor) -> Tensor:
    """The kept submodules of a BatchNorm, in order, on its output."""
    for child in module._modules.values():
        if child is not None:
            x = child(x)
    return x


class MergedLinear(RuleModule):
    """A Linear/conv layer with the BatchNorm after it folded in, from the call's tensors."""

    def __init__(self, layer: nn.Module, bn_path: str):
        super().__init__(layer)
        self.bn_path = bn_path
        object.__setattr__(self, "bn", None)  # the MergedBatchNorm, set by `link`

    def merged(self) -> tuple[Tensor, Tensor]:
        """The folded (weight, bias) from this call's tensors (no routing of the arithmetic)."""
        with torch._C.DisableTorchFunction():
            return fold(self.layer, self.layer_tensors(), self.bn.layer, self.bn.layer_tensors())

    def forward(self, x: Tensor) -> Tensor:
        with torch._C.DisableTorchFunction():
            y = affine(self.layer)(x, *self.merged())
        self.bn.expect(y)
        return y


def link(tree: nn.Module) -> nn.Module:
    """Point every folded layer at its BatchNorm in THIS tree (after each copy of a tree)."""
    modules = dict(tree.named_modules())
    for module in modules.values():
        path = getattr(module, "bn_path", None) if isinstance(module, RuleModule) else None
        if path is not None:
            object.__setattr__(module, "bn", modules[path])
    return tree


def batchnorm_pairs(module: nn.Module) -> dict[str, str]:
    """{layer name: BatchNorm name} for each eval BatchNorm right after a Linear/conv layer in
    module (leaf) order."""
    pairs, previous = {}, None
    for name, leaf in module.named_modules():
        if leaf._modules and not isinstance(leaf, BATCHNORMS):  # timm's BatchNormAct2d counts
            continue
        if previous is not None and isinstance(previous[1], LINEAR_LAYERS) and \
                isinstance(leaf, BATCHNORMS):
            if leaf.running_mean is None:
                raise FattrError(
                    f"lrp: BatchNorm '{name}' has no running statistics "
                    "(track_running_stats=False), so it normalizes with the batch's statistics "
                    "even in eval mode and cannot be folded into the layer before it.")
            pairs[previous[0]] = name
        previous = (name, leaf)
    return pairs


def _out_of_place(module: nn.Module) -> nn.Module:
    clone = copy.copy(module)
    clone.inplace = False
    return clone


def canonical(module: nn.Module, merge: bool = True) -> Match:
    """The canonizers for `module` as one `rewrite` rule `(name, node) -> replacement | None`.

    `merge=False` keeps BatchNorm and residual adds as they are (only in-place modules change).
    """
    pairs = batchnorm_pairs(module) if merge else {}
    merged = {bn: layer for layer, bn in pairs.items()}
    blocks = _residual_blocks() if merge else {}

    def match(name: str, node: nn.Module) -> nn.Module | None:
        if type(node) in blocks:  # our copy of the block: retype it and descend into it
            node.__class__ = blocks[type(node)]
            node._modules["residual_sum"] = Sum()
            return None
        if name in pairs:
            return MergedLinear(node, pairs[name])
        if name in merged:
            return MergedBatchNorm(node, name, merged[name])
        if getattr(node, "inplace", None) is True:
            return _out_of_place(node)
        return None

    return match


def canonize(module: nn.Module) -> nn.Module:
    """A canonical copy of `module` for LRP (see the module docstring); `module` is untouched.

    Called as `torch.func.functional_call(canonize(model), params, x)` with the user's params,
    it computes the same function as the model (BatchNorm folded at call time).
    """
    return link(rewrite(module, canonical(module)))
