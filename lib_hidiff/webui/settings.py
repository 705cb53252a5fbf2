"""Settings → "HiDiffusion / CFG++": option definitions and reading them at call time.

Options are read through ``opts.data`` with our own defaults: under ``--nowebui`` the settings
callback never runs, so an option may be unknown to ``opts`` even though config.json holds it.
"""

from __future__ import annotations

from typing import Any

from lib_hidiff.cfgpp.dpmpp import DPMPP_2M_VARIANTS
from lib_hidiff.cfgpp.scale import SCALE_MODES
from lib_hidiff.unet.presets import PRESETS

from .args import HIRES_POLICIES

__all__ = ["DEFAULTS", "INFOTEXT", "add_cfgpp_options", "add_hidiffusion_options", "get"]

SECTION = ("hidiffusion", "HiDiffusion / CFG++")
CATEGORY = "sd"

DEFAULTS: dict[str, Any] = {
    "hidiffusion_default_preset": "auto",
    "hidiffusion_default_raunet": True,
    "hidiffusion_default_mswmsa": True,
    "hidiffusion_default_hires": "off",
    "hidiffusion_size_hint": True,
    "cfgpp_scale_mode": "cfg/12.5",
    "cfgpp_dpmpp_2m_variant": "A",
    "cfgpp_hires_scale": 0.0,
}

INFOTEXT = {
    "cfgpp_scale_mode": "CFGpp scale mode",
    "cfgpp_dpmpp_2m_variant": "CFGpp 2M variant",
    "cfgpp_hires_scale": "CFGpp hires scale",
}
"""Settings restored from infotext (as override settings) -- they change the image."""


def get(key: str) -> Any:
    """Current value of one of our options (its default when the WebUI never registered it)."""
    from modules import shared

    data = getattr(getattr(shared, "opts", None), "data", None) or {}
    value = data.get(key, DEFAULTS[key])
    return DEFAULTS[key] if value is None else value


def _add(key: str, label: str, component: Any = None, component_args: Any = None, info: str = "") -> None:
    from modules import shared

    option = shared.OptionInfo(
        DEFAULTS[key],
        label,
        component,
        component_args,
        section=SECTION,
        category_id=CATEGORY,
        infotext=INFOTEXT.get(key),
    )
    if info:
        option = option.info(info)
    shared.opts.add_option(key, option)


def add_hidiffusion_options() -> None:
    import gradio as gr

    _add(
        "hidiffusion_default_preset",
        "HiDiffusion: default preset",
        gr.Dropdown,
        {"choices": list(PRESETS)},
        "initial value of the Preset field; auto picks the official schedule from the model and image size",
    )
    _add("hidiffusion_default_raunet", "HiDiffusion: RAU-Net on by default")
    _add("hidiffusion_default_mswmsa", "HiDiffusion: MSW-MSA on by default")
    _add(
        "hidiffusion_default_hires",
        "HiDiffusion: default for the hires fix second pass",
        gr.Radio,
        {"choices": list(HIRES_POLICIES)},
        "off = the second pass runs as usual; it upscales a finished composition",
    )
    _add(
        "hidiffusion_size_hint",
        "HiDiffusion: show the schedule hint in the accordion (preset row, steps with RAU-Net / MSW-MSA, "
        "sizes at or below native)",
    )


def add_cfgpp_options() -> None:
    import gradio as gr

    _add(
        "cfgpp_scale_mode",
        "CFG++: how the CFG scale becomes the CFG++ scale λ",
        gr.Radio,
        {"choices": list(SCALE_MODES)},
        "cfg/12.5 = the WebUI's DDIM CFG++ convention (CFG 7 gives λ 0.56); raw = λ is the CFG value "
        "(ComfyUI / reForge convention)",
    )
    _add(
        "cfgpp_dpmpp_2m_variant",
        "CFG++: DPM++ 2M CFG++ variant",
        gr.Radio,
        {"choices": list(DPMPP_2M_VARIANTS)},
        "A = official SD1.5 code, ComfyUI and reForge; B = official SDXL code (unconditional second-order term)",
    )
    _add(
        "cfgpp_hires_scale",
        "CFG++: λ for the hires fix second pass (0 = same as the first pass)",
        gr.Slider,
        {"minimum": 0.0, "maximum": 3.0, "step": 0.01},
        "CFG++ guides harder at low denoising and many steps; a lower λ avoids burnt hires passes",
    )
