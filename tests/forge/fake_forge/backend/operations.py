"""backend.operations: the layers Forge builds its UNet from (dfdcbab operations.py:125-176).

What matters to the extension: a Conv2d *is* a ``torch.nn.Conv2d`` but fetches (casts) its weight
on every call and convolves with the module's current stride/padding/dilation; a Linear is **not**
a ``torch.nn.Linear`` (a plain Module holding weight/bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weights_manual_cast(layer: torch.nn.Module, x: torch.Tensor):
    """The layer's weight and bias on x's device and dtype, fetched for this call only."""
    weight = layer.weight.to(device=x.device, dtype=x.dtype)
    bias = None if layer.bias is None else layer.bias.to(device=x.device, dtype=x.dtype)
    return weight, bias


class ForgeOperations:
    class Conv2d(torch.nn.Conv2d):
        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return self._conv_forward(x, weight, bias)

    class Linear(torch.nn.Module):
        def __init__(self, in_features, out_features, bias=True):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
            self.bias = torch.nn.Parameter(torch.empty(out_features)) if bias else None

        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return F.linear(x, weight, bias)
