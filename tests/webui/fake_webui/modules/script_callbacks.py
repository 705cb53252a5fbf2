"""modules.script_callbacks: registration (``on_*``), dispatch (``*_callback``) and the param classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modules import errors


class CFGDenoiserParams:
    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


@dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


_CATEGORIES = (
    "app_started",
    "model_loaded",
    "ui_settings",
    "cfg_denoiser",
    "cfg_denoised",
    "cfg_after_cfg",
    "infotext_pasted",
    "script_unloaded",
    "before_ui",
    "on_reload",
)
callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{c}": [] for c in _CATEGORIES}


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()


def _add(category, callback, name):
    callback_map[f"callbacks_{category}"].append(
        ScriptCallback(getattr(callback, "__module__", "?"), callback, name or "unnamed")
    )


def _run(category, *args, reverse=False):
    callbacks = list(callback_map[f"callbacks_{category}"])
    for c in reversed(callbacks) if reverse else callbacks:
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {category} for {c.script}", exc_info=True)


def on_app_started(callback, *, name=None):
    _add("app_started", callback, name)


def on_model_loaded(callback, *, name=None):
    _add("model_loaded", callback, name)


def on_ui_settings(callback, *, name=None):
    _add("ui_settings", callback, name)


def on_cfg_denoiser(callback, *, name=None):
    _add("cfg_denoiser", callback, name)


def on_cfg_denoised(callback, *, name=None):
    _add("cfg_denoised", callback, name)


def on_cfg_after_cfg(callback, *, name=None):
    _add("cfg_after_cfg", callback, name)


def on_infotext_pasted(callback, *, name=None):
    _add("infotext_pasted", callback, name)


def on_script_unloaded(callback, *, name=None):
    _add("script_unloaded", callback, name)


def on_before_ui(callback, *, name=None):
    _add("before_ui", callback, name)


def on_before_reload(callback, *, name=None):
    _add("on_reload", callback, name)


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def model_loaded_callback(sd_model):
    _run("model_loaded", sd_model)


def ui_settings_callback():
    _run("ui_settings")


def cfg_denoiser_callback(params):
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params):
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params):
    _run("cfg_after_cfg", params)


def infotext_pasted_callback(infotext, params):
    _run("infotext_pasted", infotext, params)


def script_unloaded_callback():
    _run("script_unloaded", reverse=True)


def before_ui_callback():
    _run("before_ui", reverse=True)
