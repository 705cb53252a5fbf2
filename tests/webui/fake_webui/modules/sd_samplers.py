"""modules.sd_samplers: all_samplers / all_samplers_map (built once), set_samplers(), lookups."""

from __future__ import annotations

import functools

from modules import sd_samplers_kdiffusion, sd_samplers_timesteps, sd_schedulers, shared

all_samplers = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
    *sd_samplers_timesteps.samplers_data_timesteps,
]
all_samplers_map = {x.name: x for x in all_samplers}

samplers: list = []
samplers_for_img2img: list = []
samplers_map: dict = {}
samplers_hidden: set = set()


def find_sampler_config(name):
    return all_samplers_map.get(name) if name is not None else all_samplers[0]


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def set_samplers():
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = all_samplers
    samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names():
    return [x.name for x in samplers if x.name not in samplers_hidden]


@functools.cache
def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    default = samplers[0]
    found = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
    name = sampler_name or default.name
    for scheduler in sd_schedulers.schedulers:
        for option in [scheduler.label, scheduler.name, *(scheduler.aliases or [])]:
            if name.endswith(" " + option):
                found, name = scheduler, name[: -(len(option) + 1)]
                break
    sampler = all_samplers_map.get(name, default)
    if convert_automatic and sampler.options.get("scheduler", None) == found.name:
        found = sd_schedulers.schedulers[0]
    return sampler.name, found.label


def get_sampler_from_infotext(d: dict):
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


set_samplers()
