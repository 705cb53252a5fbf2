"""modules.sd_samplers: A1111's registry and lookups (the A1111 fake's code) plus what Forge adds
(dfdcbab :11-17, :64-70): the ``alter_samplers`` entries and ``add_sampler``, which appends a new
name and *rebinds* ``all_samplers_map``."""

# ruff: noqa: F821 -- names defined by the A1111 fake's file executed below

from modules_forge import alter_samplers

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/sd_samplers.py", globals())

all_samplers.extend(alter_samplers.samplers_data_alter)
all_samplers_map = {x.name: x for x in all_samplers}


def add_sampler(sampler):
    global all_samplers_map
    if sampler.name not in [x.name for x in all_samplers]:
        all_samplers.append(sampler)
        all_samplers_map = {x.name: x for x in all_samplers}
        set_samplers()


set_samplers()
