"""comfy/ops.py (a125cd84:131-143, :289-290): Conv2d / Linear that fetch (cast) their weights on every
call when ``comfy_cast_weights`` is set (``manual_cast``), convolving with the module's current
stride / padding / dilation through ``_conv_forward``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cast_bias_weight(layer, x):
    weight = layer.weight.to(device=x.device, dtype=x.dtype)
    bias = None if layer.bias is None else layer.bias.to(device=x.device, dtype=x.dtype)
    return weight, bias


class disable_weight_init:  # noqa: N801 (ComfyUI's name)
    class Conv2d(torch.nn.Conv2d):
        comfy_cast_weights = False

        def forward_comfy_cast_weights(self, input):
            weight, bias = cast_bias_weight(self, input)
            return self._conv_forward(input, weight, bias)

        def forward(self, *args, **kwargs):
            if self.comfy_cast_weights:
                return self.forward_comfy_cast_weights(*args, **kwargs)
            return super().forward(*args, **kwargs)

    class Linear(torch.nn.Linear):
        comfy_cast_weights = False

        def forward(self, input):
            if self.comfy_cast_weights:
                weight, bias = cast_bias_weight(self, input)
                return F.linear(input, weight, bias)
            return super().forward(input)


class manual_cast(disable_weight_init):  # noqa: N801
    class Conv2d(disable_weight_init.Conv2d):
        comfy_cast_weights = True

    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True
