"""ControlNet / T2I-Adapter residuals under RAU-Net in ComfyUI, without replacing ``apply_control``.

ComfyUI's UNet takes residuals as ``control = {"input": [...], "middle": [...], "output": [...]}`` and
adds each with ``h += control[name].pop()`` (comfy/ldm/modules/diffusionmodules/openaimodel.py:365-373
at a125cd84): an "input" entry after every input block (:874), a "middle" entry after the middle
block (:889), an "output" entry onto every skip as the up path takes it (:894-895, the last entry to
the last skip). The residuals are computed at the full latent size, so under RAU-Net the deep maps
are smaller and ComfyUI would drop them ("warning control could not be applied").

Here each call's dict is copied and, as soon as a map exists -- a forward hook on the layer that
ends each input block and the middle block, registered after the core's CA pool so it sees the
pooled map -- the entries that map will receive are fitted to it by the core's rule
(lib_hidiff/unet/control_dict.py, also used for Forge's UNet). ComfyUI then adds them itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lib_hidiff.unet.control_dict import copy_control, fit_entry, fit_input_block, fit_middle_block

from .targets import block_output

__all__ = ["ControlFit", "copy_control", "fit_entry"]


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
            if self.control is not None and torch.is_tensor(out):
                fit_input_block(self.control, i, n, out)
            return None

        return fit

    def _middle_hook(self, module: nn.Module, args: tuple, out: Any) -> None:
        if self.control is not None and torch.is_tensor(out):
            fit_middle_block(self.control, out)
        return None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.control = None
