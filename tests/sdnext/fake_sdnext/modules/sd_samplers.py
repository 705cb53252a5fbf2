"""SD.Next's sampler list (modules/sd_samplers.py@058a7f0c).

* ``list_samplers()`` (:34-46) **rebinds** ``all_samplers``, ``all_samplers_map``, ``samplers``,
  ``samplers_for_img2img`` to new objects built from ``sd_samplers_diffusers.samplers_data_diffusers``
  and empties ``samplers_map``; ``set_samplers()`` (:176-188) refills the lower-case name map,
  skipping the "──" separator rows.
* ``create_sampler(name, model, overrides)`` (:77-173): separators/None keep the scheduler;
  "Default" restores the model's default; otherwise ``constructor(model)``; when the sampler comes
  back without a scheduler the model's *default* scheduler is restored (a warning), else it is
  assigned to ``model.scheduler``.
"""

from __future__ import annotations

import copy
from typing import Any

from modules import errors, shared
from modules.logger import log

all_samplers: list = []
all_samplers_map: dict = {}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map: dict = {}


def is_separator(name: Any) -> bool:
    return isinstance(name, str) and name.startswith("─")


def visible_samplers(img: bool = False) -> list:
    return [s for s in (samplers_for_img2img if img else samplers) if not is_separator(s.name)]


def find_sampler(name: str | None):
    if name is None or name == "None":
        return all_samplers_map.get("Default")
    for sampler in all_samplers:
        if sampler.name.lower() == name.lower() or name in sampler.aliases:
            return sampler
    return None


def list_samplers() -> list:
    global all_samplers, all_samplers_map, samplers, samplers_for_img2img, samplers_map
    from modules import sd_samplers_diffusers

    all_samplers = [*sd_samplers_diffusers.samplers_data_diffusers]
    all_samplers_map = {x.name: x for x in all_samplers}
    samplers = samplers_for_img2img = all_samplers
    samplers_map = {}
    return all_samplers


def find_sampler_config(name: str | None):
    if name is not None and name != "None":
        return all_samplers_map.get(name)
    return all_samplers[0]


def restore_default(model: Any, requested: str = "Default"):
    if getattr(model, "default_scheduler", None) is not None:
        model.scheduler = copy.deepcopy(model.default_scheduler)
    if requested != "Default":
        log.warning(
            f'Sampler: requested="{requested}" set="Default" cls={model.scheduler.__class__.__name__}'
        )
    return model.scheduler


def create_sampler(name: str | None, model: Any, scheduler_overrides: dict | None = None):
    if name is None or name == "None" or is_separator(name):
        return model.scheduler if model is not None else None
    if model is not None and getattr(model, "default_scheduler", None) is None:
        model.default_scheduler = copy.deepcopy(model.scheduler)
    if name == "Default":
        return restore_default(model)
    config = find_sampler_config(name)
    if config is None or config.constructor is None:
        if not shared.opts.schedulers_fallback:
            raise errors.ValidationError(f'Sampler: name="{name}" unknown')
        return restore_default(model, name)
    from modules import sd_samplers_diffusers

    sd_samplers_diffusers.scheduler_overrides = scheduler_overrides or {}
    try:
        sampler = config.constructor(model)
    finally:
        sd_samplers_diffusers.scheduler_overrides = {}
    if sampler.sampler is None:
        return restore_default(model, name)
    if model is not None:
        model.scheduler = sampler.sampler
    # the debug line (sd_samplers.py@058a7f0c:166-172): the new scheduler's config as constructed
    config = {
        k: v
        for k, v in sampler.sampler.config.items()
        if not k.startswith("_") and v is not None and v is not False
    }
    log.debug(f'Sampler: "{sampler.name}" class={sampler.sampler.__class__.__name__} config={config}')
    return sampler.sampler


def set_samplers() -> None:
    global samplers, samplers_for_img2img
    samplers = samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        if is_separator(sampler.name):
            continue
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name
