"""HiDiffusion and CFG++ for diffusers pipelines (pure torch + diffusers; never a WebUI host).

    from lib_hidiff.diffusers import cfgpp, hidiffusion
    with hidiffusion(pipe, seed=0), cfgpp(pipe, sampler="euler", scale=0.6):
        image = pipe(prompt, height=1024, width=1024, guidance_scale=7.5).images[0]

`cfgpp(pipe, ...)` swaps in a CFG++ scheduler built from `pipe.scheduler.config` and hooks
`pipe.unet` so each step sees its unconditional prediction (the pipeline must run its
unconditional pass: guidance_scale > 1; λ is `scale`). `hidiffusion(pipe, ...)` runs
lib_hidiff.unet's HiDiffusion on `pipe.unet` with a clock read from the pipeline's scheduler.
Both restore the pipeline on exit, also after an exception. docs/diffusers.md has the details.

diffusers is imported on first use of a name below, so `import lib_hidiff.diffusers` costs nothing.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DDIMCFGppScheduler": "lib_hidiff.diffusers.schedulers",
    "DPMSolverMultistepCFGppScheduler": "lib_hidiff.diffusers.schedulers",
    "EulerAncestralCFGppScheduler": "lib_hidiff.diffusers.schedulers",
    "EulerCFGppScheduler": "lib_hidiff.diffusers.schedulers",
    "CFGPP_SCHEDULERS": "lib_hidiff.diffusers.registry",
    "cfgpp_scheduler_class": "lib_hidiff.diffusers.registry",
    "make_cfgpp_scheduler": "lib_hidiff.diffusers.registry",
    "UNetOutputCapture": "lib_hidiff.diffusers.capture",
    "SchedulerClock": "lib_hidiff.diffusers.clock",
    "attach_cfgpp": "lib_hidiff.diffusers.pipeline",
    "attach_hidiffusion": "lib_hidiff.diffusers.pipeline",
    "cfgpp": "lib_hidiff.diffusers.pipeline",
    "hidiffusion": "lib_hidiff.diffusers.pipeline",
    "attach_start": "lib_hidiff.diffusers.inversion",
    "invert_cfgpp": "lib_hidiff.diffusers.inversion",
    "start_from": "lib_hidiff.diffusers.inversion",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lib_hidiff.diffusers' has no attribute {name!r}")
