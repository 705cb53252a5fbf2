"""SD.Next's script callbacks (modules/script_callbacks.py@058a7f0c).

The same ``callback_map`` keys (:107-128) and registration functions (:387-540). Dispatchers run
every callback in a try/except that reports and goes on; ``script_unloaded`` and ``before_ui`` run
in reverse order. ``cfg_denoiser_callback`` / ``cfg_denoised_callback`` / ``cfg_after_cfg_callback``
exist but SD.Next never calls them (no call site at 058a7f0c), and neither does this fake.
``on_extra_noise`` registers into a key the map lacks (as upstream: KeyError).
"""

from __future__ import annotations

import sys
from collections import namedtuple
from typing import Any

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback"])

callback_map: dict[str, list[ScriptCallback]] = dict(
    callbacks_app_started=[],
    callbacks_before_process=[],
    callbacks_after_process=[],
    callbacks_model_loaded=[],
    callbacks_ui_settings=[],
    callbacks_ui_tabs=[],
    callbacks_before_image_saved=[],
    callbacks_image_saved=[],
    callbacks_image_save_btn=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_image_grid=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_after_ui=[],
    callbacks_on_reload=[],
)


def clear_callbacks() -> None:
    for callbacks in callback_map.values():
        callbacks.clear()


def _run(key: str, *args: Any, reverse: bool = False) -> None:
    callbacks = callback_map[key]
    for c in reversed(callbacks) if reverse else list(callbacks):
        try:
            c.callback(*args)
        except Exception as e:
            errors.display(e, f"Executing callback: {c.script} {key}")


def app_started_callback(demo: Any, app: Any) -> None:
    _run("callbacks_app_started", demo, app)


def before_process_callback(p: Any) -> None:
    _run("callbacks_before_process", p)


def after_process_callback(p: Any) -> None:
    _run("callbacks_after_process", p)


def app_reload_callback() -> None:
    _run("callbacks_on_reload")


def model_loaded_callback(sd_model: Any) -> None:
    _run("callbacks_model_loaded", sd_model)


def ui_settings_callback() -> None:
    _run("callbacks_ui_settings")


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("callbacks_infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("callbacks_script_unloaded", reverse=True)


def before_ui_callback() -> None:
    _run("callbacks_before_ui", reverse=True)


def after_ui_callback() -> None:
    _run("callbacks_after_ui", reverse=True)


def cfg_denoiser_callback(params: Any) -> None:  # never called by SD.Next
    _run("callbacks_cfg_denoiser", params)


def add_callback(callbacks: list, fun: Any) -> None:
    filename = sys._getframe().f_back.f_back.f_code.co_filename  # the file that registered it
    callbacks.append(ScriptCallback(filename, fun))


def remove_callbacks_for_function(callback_func: Any) -> None:
    for callbacks in callback_map.values():
        for c in [c for c in callbacks if c.callback == callback_func]:
            callbacks.remove(c)


def on_app_started(callback):
    add_callback(callback_map["callbacks_app_started"], callback)


def on_before_process(callback):
    add_callback(callback_map["callbacks_before_process"], callback)


def on_after_process(callback):
    add_callback(callback_map["callbacks_after_process"], callback)


def on_before_reload(callback):
    add_callback(callback_map["callbacks_on_reload"], callback)


def on_model_loaded(callback):
    add_callback(callback_map["callbacks_model_loaded"], callback)


def on_ui_settings(callback):
    add_callback(callback_map["callbacks_ui_settings"], callback)


def on_ui_tabs(callback):
    add_callback(callback_map["callbacks_ui_tabs"], callback)


def on_extra_noise(callback):
    add_callback(callback_map["callbacks_extra_noise"], callback)  # KeyError, as upstream


def on_cfg_denoiser(callback):
    add_callback(callback_map["callbacks_cfg_denoiser"], callback)


def on_cfg_denoised(callback):
    add_callback(callback_map["callbacks_cfg_denoised"], callback)


def on_cfg_after_cfg(callback):
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback)


def on_before_component(callback):
    add_callback(callback_map["callbacks_before_component"], callback)


def on_after_component(callback):
    add_callback(callback_map["callbacks_after_component"], callback)


def on_image_grid(callback):
    add_callback(callback_map["callbacks_image_grid"], callback)


def on_infotext_pasted(callback):
    add_callback(callback_map["callbacks_infotext_pasted"], callback)


def on_script_unloaded(callback):
    add_callback(callback_map["callbacks_script_unloaded"], callback)


def on_before_ui(callback):
    add_callback(callback_map["callbacks_before_ui"], callback)


def on_after_ui(callback):
    add_callback(callback_map["callbacks_after_ui"], callback)
