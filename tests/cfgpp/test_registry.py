"""cfgpp.SAMPLERS as registration data for the WebUI."""

from __future__ import annotations

import inspect
import json

import pytest

from lib_hidiff import cfgpp

# WebUI 1.10 schedule types (modules/sd_schedulers.py): name, label and aliases. The WebUI splits a
# sampler name ending in " <any of these>" into sampler + schedule type.
SCHEDULE_KEYS = [
    "automatic",
    "Automatic",
    "uniform",
    "Uniform",
    "karras",
    "Karras",
    "exponential",
    "Exponential",
    "polyexponential",
    "Polyexponential",
    "sgm_uniform",
    "SGM Uniform",
    "SGMUniform",
    "kl_optimal",
    "KL Optimal",
    "align_your_steps",
    "Align Your Steps",
    "simple",
    "Simple",
    "normal",
    "Normal",
    "ddim",
    "DDIM",
    "beta",
    "Beta",
]
# WebUI 1.10 built-in sampler names and aliases (k-diffusion and timestep samplers).
WEBUI_SAMPLERS = {
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ SDE": ["k_dpmpp_sde"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 2M SDE Heun": ["k_dpmpp_2m_sde_heun"],
    "DPM++ 2S a": ["k_dpmpp_2s_a"],
    "DPM++ 3M SDE": ["k_dpmpp_3m_sde"],
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM fast": ["k_dpm_fast"],
    "DPM adaptive": ["k_dpm_ad"],
    "Restart": ["restart"],
    "DDIM": ["ddim"],
    "DDIM CFG++": ["ddim_cfgpp"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "LCM": ["k_lcm"],
}
KNOWN_OPTIONS = {"scheduler", "second_order", "uses_ensd", "brownian_noise", "default_eta_is_0"}


def test_six_samplers_with_stable_keys():
    assert [i.key for i in cfgpp.SAMPLERS] == [
        "euler_cfg_pp",
        "euler_ancestral_cfg_pp",
        "dpmpp_2m_cfg_pp",
        "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde_cfg_pp",
        "ddim_cfg_pp",
    ]
    assert [i.name for i in cfgpp.SAMPLERS] == [
        "Euler CFG++",
        "Euler a CFG++",
        "DPM++ 2M CFG++",
        "DPM++ 2S a CFG++",
        "DPM++ SDE CFG++",
        "DDIM CFG++",
    ]
    assert cfgpp.SAMPLERS_BY_KEY["dpmpp_sde_cfg_pp"].official is False
    assert sum(not i.official for i in cfgpp.SAMPLERS) == 1


@pytest.mark.parametrize("info", cfgpp.SAMPLERS, ids=lambda i: i.key)
def test_names_and_aliases(info):
    for name in filter(None, (info.name, info.alt_name)):
        assert not any(
            name.endswith(" " + key) or name.lower().endswith(" " + key.lower()) for key in SCHEDULE_KEYS
        )
    own = [info.name, *info.aliases]
    assert len({n.lower() for n in own}) == len(own)
    assert info.key in info.aliases
    builtin = {n.lower() for name, aliases in WEBUI_SAMPLERS.items() for n in (name, *aliases)}
    assert not {a.lower() for a in info.aliases} & builtin
    if info.webui_builtin is None:
        assert info.name.lower() not in builtin
    else:  # the glue registers it only when missing, or under alt_name
        assert info.webui_builtin in WEBUI_SAMPLERS
        assert info.alt_name and info.alt_name.lower() not in builtin


def test_names_and_aliases_unique_across_samplers():
    every = [n.lower() for i in cfgpp.SAMPLERS for n in (i.name, *i.aliases)]
    assert len(every) == len(set(every))


@pytest.mark.parametrize("info", cfgpp.SAMPLERS, ids=lambda i: i.key)
def test_options_and_signature(info):
    assert set(info.options) <= KNOWN_OPTIONS
    assert all(isinstance(v, (str, bool)) for v in info.options.values())
    json.dumps(info.options)  # the HTTP API serialises them
    name, fn, aliases, options = info.as_webui_tuple()
    assert (name, fn, aliases, options) == (info.name, info.function, list(info.aliases), info.options)

    params = inspect.signature(info.function).parameters
    assert list(params)[:6] == ["model", "x", "sigmas", "extra_args", "callback", "disable"]
    assert set(info.extra_params) <= set(params)
    assert info.options.get("brownian_noise", False) == (info.key == "dpmpp_sde_cfg_pp")
    stochastic = "eta" in params
    assert info.options.get("uses_ensd", False) == (stochastic and info.key != "dpmpp_sde_cfg_pp")
    if stochastic:
        assert {"s_noise", "noise_sampler"} <= set(params)
        assert "s_noise" in info.extra_params
    assert info.options.get("default_eta_is_0", False) == (
        params["eta"].default == 0 if stochastic else False
    )
    if info.options.get("scheduler"):
        assert info.options["scheduler"] in SCHEDULE_KEYS


def test_second_order_flag_matches_model_calls():
    # the call counts themselves are checked in test_identities.test_model_calls_and_callbacks
    assert {i.key for i in cfgpp.SAMPLERS if i.options.get("second_order")} == {
        "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde_cfg_pp",
    }
