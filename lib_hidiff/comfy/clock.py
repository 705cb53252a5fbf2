"""HiDiffusion's clock in ComfyUI: (step, total) of a UNet call, from ComfyUI's own sampling state.

Every model call of a ComfyUI sampling run carries ``transformer_options["sample_sigmas"]`` (the
schedule being sampled, set once per run in ``CFGGuider.inner_sample``, comfy/samplers.py:979 at
a125cd84) and ``transformer_options["sigmas"]`` (the sigma of this call, comfy/samplers.py:323).
The step is where the call's sigma lies in that schedule: a sigma in (σ_{k+1}, σ_k] is step k of
``total = len(sample_sigmas) - 1`` -- so the cond and uncond calls of one step (batched or split),
the extra evaluations of second-order samplers (DPM++ 2S, DPM 2 midpoints between σ_k and σ_{k+1}),
a KSamplerAdvanced start/end range (its schedule is the slice it samples) and img2img with
denoise < 1 (the tail the sampler runs) all read the official integer rule
``int(total * start) <= step < int(total * end)`` over the steps actually sampled, as the official
code counts the timesteps its pipeline runs. Heun's correction at σ_{k+1} is a call at step k + 1's
noise level, and counts as that step.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["REL_TOL", "ScheduleClock", "step_in_schedule"]

REL_TOL = 1e-5  # a call's sigma within this relative distance of σ_k is at σ_k (float32 round trips)


def step_in_schedule(sigma: float, schedule: list[float]) -> tuple[int, int]:
    """(step, total) of a call at ``sigma`` in a descending ``schedule`` of total + 1 sigmas."""
    total = max(len(schedule) - 1, 1)
    step = 0
    for k in range(1, len(schedule) - 1):  # the last point only ends the last step
        if schedule[k] >= sigma * (1.0 - REL_TOL):
            step = k
        else:
            break
    return (min(step, total - 1), total)


class ScheduleClock:
    """Turns one call's ``transformer_options`` into (step, total); caches the schedule as floats."""

    def __init__(self) -> None:
        self._schedule_obj: Any = None
        self._schedule: list[float] = []
        self.value: tuple[int, int] | float = (0, 1)

    def __call__(self) -> tuple[int, int] | float:
        return self.value

    def read(self, transformer_options: dict, timesteps: Any = None) -> tuple[int, int] | float | None:
        """Set and return the clock for this call; None when ComfyUI gave no sampling state."""
        schedule = transformer_options.get("sample_sigmas")
        sigmas = transformer_options.get("sigmas")
        if schedule is None or sigmas is None or len(schedule) < 2:
            return None
        if schedule is not self._schedule_obj:  # a new sampling run (one device read per run)
            self._schedule_obj = schedule
            self._schedule = [float(s) for s in torch.as_tensor(schedule).detach().flatten().cpu()]
        sigma = float(torch.as_tensor(sigmas).detach().flatten()[0])
        self.value = step_in_schedule(sigma, self._schedule)
        return self.value
