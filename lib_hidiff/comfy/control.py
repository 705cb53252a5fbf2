"""ControlNet / T2I-Adapter residuals under RAU-Net in ComfyUI, without replacing ``apply_control``.

ComfyUI's UNet takes residuals as ``control = {"input": [...], "middle": [...], "output": [...]}`` and
adds each with ``h += control[name].pop()`` (comfy/ldm/modules/diffusionmodules/openaimodel.py:365-373
at a125cd84): an "input" entry after every input block (:874), a "middle" entry after the middle
block (:889), an "output" entry onto every skip as the up path takes it (:894-895, the last entry to
the last skip). The residuals are computed at the full latent size, so under RAU-Net the deep maps
are smaller and ComfyUI would drop them ("warning control could not be applied").

Here each call's dict is copied (fresh lists) and, as soon as a map exists -- a forward hook on the
layer that ends each input block and the middle block, registered after the core's CA pool so it
sees the pooled map -- the entries that map will receive are area-resized to it, the rule the core
uses for diffusers ControlNet residuals. ComfyUI then adds them itself. Entries that already fit
are left as they are (vanilla sizes: bit-identical).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lib_hidiff.unet.raunet import resize

from .targets import block_output

__all__ = ["ControlFit", "copy_control", "fit_entry"]


def copy_control(control: Any) -> Any:
    """The call's control dict with fresh lists (ComfyUI pops them; we replace entries)."""
    if not isinstance(control, dict):
        return control
    return {k: list(v) if isinstance(v, list) else v for k, v in control.items()}


def fit_entry(entry: Any, like: torch.Tensor) -> Any:
    """A residual at the spatial size of the map it is added to; None / non-spatial as they are."""
    if not torch.is_tensor(entry) or entry.dim() != like.dim() or entry.dim() < 3:
        return entry
    size = tuple(like.shape[-2:])
    return entry if tuple(entry.shape[-2:]) == size else resize(entry, size, "area")


class ControlFit:
    """Hooks that fit the current call's control entries to the maps RAU-Net leaves."""

    def __init__(self, unet: nn.Module):
        self.control: dict | None = None  # the copy handed to the UNet call in progress
        n = len(unet.input_blocks)
        self._handles = [
            block_output(block).register_forward_hook(self._input_hook(i, n))
            for i, block in enumerate(unet.input_blocks)
        ]
        middle = getattr(unet, "middle_block", None)
        if middle is not None:
            self._handles.append(block_output(middle).register_forward_hook(self._middle_hook))

    def _input_hook(self, i: int, n: int):
        def fit(module: nn.Module, args: tuple, out: Any) -> None:
            control = self.control
            if control is None or not torch.is_tensor(out):
                return None
            inputs = control.get("input")
            if isinstance(inputs, list) and inputs:  # added to this map right after the block
                inputs[-1] = fit_entry(inputs[-1], out)
            outputs = control.get("output")
            if isinstance(outputs, list):  # added to skip i when the up path takes it
                k = i - (n - len(outputs))
                if 0 <= k < len(outputs):
                    outputs[k] = fit_entry(outputs[k], out)
            return None

        return fit

    def _middle_hook(self, module: nn.Module, args: tuple, out: Any) -> None:
        control = self.control
        if control is None or not torch.is_tensor(out):
            return None
        middle = control.get("middle")
        if isinstance(middle, list) and middle:
            middle[-1] = fit_entry(middle[-1], out)
        return None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.control = None
