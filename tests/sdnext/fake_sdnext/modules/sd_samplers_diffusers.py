"""SD.Next's diffusers samplers (modules/sd_samplers_diffusers.py@058a7f0c), a representative subset.

* ``config``: per-name scheduler defaults ('All' = global ones); ``/sdapi/v1/samplers`` lists its
  keys (api/endpoints.py:16-23).
* ``samplers_data_diffusers``: 'Default' first, "── … ──" separator rows (constructor None),
  ``SamplerData(name, lambda model: DiffusionSampler(name, Cls, model), [], {})``, and
  'Same as primary' **last** (the primary dropdown drops it and maps indices back onto this list).
* ``DiffusionSampler`` (:415-609): config = 'All' -> the model's default scheduler values for
  those keys -> ``config[name]`` -> kwargs (existing keys only) -> settings overrides; keys
  the constructor's signature lacks are dropped; then the rejection rules: a scheduler whose
  ``set_timesteps`` lacks ``sigmas`` when the model's default scheduler has it, or lacking
  ``scale_noise`` when the default has it -- with ``schedulers_fallback`` a warning and no
  sampler (the caller restores the default), else ``ValidationError``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from modules import errors, shared
from modules.logger import log
from modules.sd_samplers_common import SamplerData

scheduler_overrides: dict[str, Any] = {}

config: dict[str, dict[str, Any]] = {
    "All": {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
    },
    "Euler": {"steps_offset": 0, "interpolation_type": "linear", "timestep_spacing": "linspace"},
    "Euler a": {"steps_offset": 0, "timestep_spacing": "linspace"},
    "DPM++ 2M": {
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "final_sigmas_type": "zero",
        "timestep_spacing": "linspace",
        "solver_order": 2,
        "thresholding": False,
    },
    "UniPC": {"solver_order": 2, "lower_order_final": True, "timestep_spacing": "linspace"},
    "DDIM": {
        "clip_sample": False,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "timestep_spacing": "leading",
    },
    "PNDM": {
        "skip_prk_steps": False,
        "set_alpha_to_one": False,
        "steps_offset": 0,
        "timestep_spacing": "linspace",
    },
}


def _data(name: str, cls: type) -> SamplerData:
    return SamplerData(name, lambda model: DiffusionSampler(name, cls, model), [], {})


samplers_data_diffusers: list[SamplerData] = [
    SamplerData("Default", None, [], {}),
    SamplerData("── Euler ──", None, [], {}),
    _data("Euler", EulerDiscreteScheduler),
    _data("Euler a", EulerAncestralDiscreteScheduler),
    SamplerData("── DPM / DPM++ ──", None, [], {}),
    _data("DPM++ 2M", DPMSolverMultistepScheduler),
    SamplerData("── UniPC / DEIS ──", None, [], {}),
    _data("UniPC", UniPCMultistepScheduler),
    SamplerData("── Classic ──", None, [], {}),
    _data("DDIM", DDIMScheduler),
    _data("PNDM", PNDMScheduler),
    SamplerData("Same as primary", None, [], {}),
]


def get_override(key: str) -> Any:
    return scheduler_overrides[key] if key in scheduler_overrides else getattr(shared.opts, key, None)


def _has_parameter(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class DiffusionSampler:
    def __init__(self, name: str, constructor: type, model: Any, **kwargs: Any):
        self.name = name
        self.config: dict[str, Any] = dict(config.get("All", {}))
        self.sampler = None
        if model is not None and getattr(model, "default_scheduler", None) is None:
            model.default_scheduler = copy.deepcopy(model.scheduler)
        defaults = {} if model is None else dict(model.default_scheduler.config)
        for key, value in defaults.items():
            if key in self.config:
                self.config[key] = value
        self.config.update(config.get(name, {}))
        for key, value in kwargs.items():
            if key in self.config:
                self.config[key] = value
        if get_override("schedulers_prediction_type") != "default":
            self.config["prediction_type"] = get_override("schedulers_prediction_type")
        if "thresholding" in self.config:
            self.config["thresholding"] = get_override("schedulers_use_thresholding")
        if "lower_order_final" in self.config:
            self.config["lower_order_final"] = get_override("schedulers_use_loworder")
        if "solver_order" in self.config and int(get_override("schedulers_solver_order")) > 0:
            self.config["solver_order"] = int(get_override("schedulers_solver_order"))
        spacing = get_override("schedulers_timestep_spacing")
        if "timestep_spacing" in self.config and spacing not in ("default", None):
            self.config["timestep_spacing"] = spacing
        if "num_train_timesteps" in self.config:
            self.config["num_train_timesteps"] = get_override("schedulers_timesteps_range")

        possible = inspect.signature(constructor, follow_wrapped=True).parameters
        self.config = {k: v for k, v in self.config.items() if k in possible}
        try:
            sampler = constructor(**self.config)
        except Exception as e:
            log.error(f'Sampler: "{name}" {e}')
            if not shared.opts.schedulers_fallback:
                raise errors.ValidationError(f'Sampler: name="{name}" {e}') from e
            return
        default = None if model is None else model.default_scheduler
        if default is not None and hasattr(sampler, "set_timesteps"):
            rejected = None
            if _has_parameter(default.set_timesteps, "sigmas") and not _has_parameter(
                sampler.set_timesteps, "sigmas"
            ):
                rejected = "does not accept sigmas"
            elif hasattr(default, "scale_noise") and not hasattr(sampler, "scale_noise"):
                rejected = "does not implement scale noise"
            if rejected is not None:
                if not shared.opts.schedulers_fallback:
                    raise errors.ValidationError(f'Sampler: name="{name}" {rejected}')
                log.warning(f'Sampler: name="{name}" {rejected}')
                return
        self.sampler = sampler
        self.sampler.name = name
