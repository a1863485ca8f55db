"""captum as an independent reference for the rule methods, with its DeepLift bugs worked around.

captum's DeepLift (0.9.0) has three bugs that fattr does not share; the tests show each one and
then compare with captum on an equivalent model where it cannot occur:
- a module used twice raises (issue 1082): `captum_friendly` gives each BasicBlock its own
  second ReLU;
- a nonlinear module fed directly by another (ReLU then MaxPool) gets the second one's plain
  gradient, because both tensor hooks sit on the same tensor: `captum_friendly` puts a clone
  after every ReLU (a linear op, invisible to DeepLift);
- overlapping max-pool windows (resnet's 3x3 stride-2 stem) keep only one window's share at a
  shared argmax, because `max_unpool` overwrites: `accumulating_max_pool` adds them up.
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torchvision
from captum.attr._core import deep_lift
from torch import nn


class Clone(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _block_forward(self: torchvision.models.resnet.BasicBlock, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    out += identity
    return self.relu2(out)


def dedupe_relus(net: nn.Module) -> nn.Module:
    """A deep copy of a torchvision ResNet in which no ReLU module is used twice."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            m.relu2 = nn.ReLU(inplace=True)
            m.forward = types.MethodType(_block_forward, m)
    return net


def captum_friendly(net: nn.Module) -> nn.Module:
    """The same function as `net`, with no ReLU used twice and a clone after every ReLU."""
    net = dedupe_relus(net)
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(m, name, nn.Sequential(child, Clone()))
    return net


def _accumulating_unpool(values, indices, kernel_size, stride, padding, shape):
    flat = values.new_zeros(*shape[:2], shape[2] * shape[3])
    return flat.scatter_add(2, indices.flatten(2), values.flatten(2)).reshape(shape)


def _max_pool2d(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    return deep_lift.maxpool(module, F.max_pool2d, _accumulating_unpool, inputs, outputs,
                             grad_input, grad_output, eps=eps)


@contextlib.contextmanager
def accumulating_max_pool() -> Iterator[None]:
    """captum's MaxPool2d rule with overlapping windows added up (as the chain rule does)."""
    original = deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d]
    deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] = _max_pool2d
    try:
        yield
    finally:
        deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] = original
