"""Sampler names for the diffusers CFG++ schedulers, and building one from any scheduler config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CFGPP_SCHEDULERS", "CFGppSchedulerInfo", "cfgpp_scheduler_class", "make_cfgpp_scheduler"]


@dataclass(frozen=True)
class CFGppSchedulerInfo:
    """One CFG++ scheduler: its class name, the lib_hidiff.cfgpp sampler it equals, accepted names."""

    key: str
    class_name: str
    cfgpp_key: str  # lib_hidiff.cfgpp.SAMPLERS_BY_KEY key of the k-diffusion sampler it equals
    names: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)  # config the sampler itself fixes


CFGPP_SCHEDULERS: tuple[CFGppSchedulerInfo, ...] = (
    CFGppSchedulerInfo("ddim", "DDIMCFGppScheduler", "ddim_cfg_pp", ("ddim", "ddim_cfg_pp", "DDIM CFG++")),
    CFGppSchedulerInfo(
        "euler", "EulerCFGppScheduler", "euler_cfg_pp", ("euler", "euler_cfg_pp", "Euler CFG++")
    ),
    CFGppSchedulerInfo(
        "euler_a",
        "EulerAncestralCFGppScheduler",
        "euler_ancestral_cfg_pp",
        ("euler_a", "euler_ancestral", "euler_ancestral_cfg_pp", "Euler a CFG++"),
    ),
    CFGppSchedulerInfo(
        "dpmpp_2m",
        "DPMSolverMultistepCFGppScheduler",
        "dpmpp_2m_cfg_pp",
        ("dpmpp_2m", "dpmpp_2m_cfg_pp", "DPM++ 2M CFG++"),
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
)

_BY_NAME = {name.lower(): info for info in CFGPP_SCHEDULERS for name in info.names}


def _info(sampler: str) -> CFGppSchedulerInfo:
    info = _BY_NAME.get(str(sampler).lower())
    if info is None:
        allowed = ", ".join(repr(i.key) for i in CFGPP_SCHEDULERS)
        raise ValueError(f"CFG++ sampler must be one of {allowed}; got {sampler!r}")
    return info


def cfgpp_scheduler_class(sampler: str) -> type:
    """The scheduler class for a sampler name ("euler", "Euler a CFG++", "dpmpp_2m_cfg_pp", ...)."""
    from . import schedulers

    return getattr(schedulers, _info(sampler).class_name)


def make_cfgpp_scheduler(
    config: Mapping[str, Any], sampler: str = "euler", scale: float = 0.6, **overrides: Any
):
    """A CFG++ scheduler from any diffusers scheduler config (e.g. `pipe.scheduler.config`).

    The base's timestep spacing, beta schedule, prediction type, Karras sigmas... all carry over.
    `overrides` are config keys for the new scheduler (e.g. cfgpp_variant="B" for DPM++ 2M).
    """
    info = _info(sampler)
    cls = cfgpp_scheduler_class(info.key)
    return cls.from_config(dict(config), **{**info.config, **overrides, "cfgpp_scale": scale})
