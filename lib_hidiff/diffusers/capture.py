"""The UNet output of the latest call, kept for the CFG++ schedulers (pure torch).

A diffusers pipeline hands `scheduler.step()` only the guided noise prediction. The unconditional
prediction of the same step exists only inside the pipeline, as the first half of the UNet's output
batch (`noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)`). A forward hook on the UNet keeps
that output, with the timestep it was called with, until the scheduler takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = ["Captured", "UNetOutputCapture"]


@dataclass(frozen=True)
class Captured:
    """One UNet call: its output batch and its timestep argument (as given, possibly None)."""

    output: torch.Tensor
    timestep: Any


def _output_tensor(output: Any) -> torch.Tensor | None:
    # UNet2DConditionModel returns a UNet2DConditionOutput, or a tuple with return_dict=False.
    if isinstance(output, torch.Tensor):
        return output
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _timestep_argument(args: tuple, kwargs: dict) -> Any:
    if "timestep" in kwargs:
        return kwargs["timestep"]
    return args[1] if len(args) > 1 else None


class UNetOutputCapture:
    """A removable forward hook that keeps the latest UNet call's output for one `take()`.

    `take()` hands the kept call over and forgets it, so a scheduler never reads a call twice and
    never mistakes an earlier step's output for the current one.
    """

    def __init__(self) -> None:
        self._latest: Captured | None = None
        self._handle: Any = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self, unet: nn.Module) -> UNetOutputCapture:
        if self._handle is not None:
            raise RuntimeError("this UNetOutputCapture is already attached; detach it first")
        self._handle = unet.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self._latest = None

    def __deepcopy__(self, memo: dict) -> UNetOutputCapture:
        # A scheduler copied by a host keeps listening to the same UNet hook, never a UNet copy.
        return self

    def take(self) -> Captured | None:
        latest, self._latest = self._latest, None
        return latest

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        tensor = _output_tensor(output)
        # Not a copy: the pipeline only reads the output. The scheduler checks it against the
        # guided prediction it receives, so a changed or foreign output is caught there.
        self._latest = None if tensor is None else Captured(tensor, _timestep_argument(args, kwargs))
