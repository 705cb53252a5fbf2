"""HiDiffusion's clock on a diffusers pipeline: (step, total) of the UNet call in progress.

The official HiDiffusion counts UNet calls `i` out of `N = pipeline._num_timesteps`, the number of
timesteps the pipeline actually runs (the tail after img2img's t_start, the head before SDXL's
denoising_end; 2N−1 entries for Heun-type schedulers, which repeat timesteps). This clock finds the
same `i` from the pipeline's own scheduler instead of counting calls, so extra or split UNet calls
(cond and uncond in two calls, a ControlNet pass) cannot desynchronise it: a forward pre-hook on the
UNet reads the timestep it is called with and locates it in `scheduler.timesteps` (through
`scheduler.step_index` where the scheduler keeps one, which tells repeated timesteps apart).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["SchedulerClock"]


def _first_value(timestep: Any) -> float | None:
    if timestep is None:
        return None
    try:
        values = torch.as_tensor(timestep).detach().flatten()
    except (TypeError, ValueError, RuntimeError):
        return None
    return float(values[0]) if values.numel() else None


def _timestep_argument(args: tuple, kwargs: dict) -> Any:
    if "timestep" in kwargs:
        return kwargs["timestep"]
    return args[1] if len(args) > 1 else None


class SchedulerClock:
    """`clock()` -> (step, total) for the UNet call in progress; reads `pipe.scheduler` at each call.

    `pipe` is anything with a `scheduler` (and optionally the `_num_timesteps` diffusers pipelines
    set before their loop). Attach it to the UNet (`clock.attach(pipe.unet)`) so it sees each call's
    timestep; `detach()` removes the hook.
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._handle: Any = None
        self._run: Any = None  # the scheduler.timesteps object of the current run
        self._values: torch.Tensor | None = None
        self._start: int | None = None
        self._last: int | None = None
        self.value: tuple[int, int] = (0, 1)

    def __call__(self) -> tuple[int, int]:
        return self.value

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self, unet: nn.Module) -> SchedulerClock:
        if self._handle is not None:
            raise RuntimeError("this SchedulerClock is already attached; detach it first")
        self._handle = unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = _first_value(_timestep_argument(args, kwargs))
        if t is not None:
            self.value = self.locate(t)

    def _new_run(self, timesteps: Any) -> None:
        self._run = timesteps
        self._values = torch.as_tensor(timesteps).detach().to(device="cpu", dtype=torch.float64).flatten()
        self._start = None
        self._last = None

    def locate(self, t: float) -> tuple[int, int]:
        """(step, total) for a UNet call at timestep t in the current scheduler run."""
        scheduler = self.pipe.scheduler
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is None or len(timesteps) == 0:
            return self.value
        if timesteps is not self._run:  # set_timesteps makes a new tensor: a new run
            self._new_run(timesteps)
        values = self._values
        n = values.numel()
        begin = getattr(scheduler, "begin_index", None)
        index = getattr(scheduler, "step_index", None)
        tol = 1e-4 * max(1.0, abs(t))
        exact = torch.nonzero((values - t).abs() <= tol).flatten()
        if isinstance(index, int) and 0 <= index < n and abs(float(values[index]) - t) <= tol:
            pos = index
        elif exact.numel() == 1:
            # A timestep the run has once: that step, also for calls out of order (an inversion
            # walks the schedule backwards before the pass runs it forwards).
            pos = int(exact[0])
        else:
            # No step index yet (DPM-Solver before its first step, DDIM): nearest timestep at or
            # after the last located call, the exact one when it is there.
            low = self._last if self._last is not None else (begin if isinstance(begin, int) else 0)
            low = min(max(low, 0), n - 1)
            distance = (values[low:] - t).abs()
            pos = low + int(torch.argmin(distance))  # argmin takes the first of equal distances
        if self._start is None:
            self._start = begin if isinstance(begin, int) and 0 <= begin <= pos else pos
        self._last = pos
        start = self._start
        total = n - start
        run = getattr(self.pipe, "_num_timesteps", None)
        if isinstance(run, int) and not isinstance(run, bool) and 0 < run <= n - start:
            total = run  # SDXL's denoising_end runs only the head of the remaining timesteps
        return (min(max(pos - start, 0), total - 1), total)
