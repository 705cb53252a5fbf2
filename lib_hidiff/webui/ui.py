"""The HiDiffusion accordion: components in FIELDS order, tooltips, paste fields.

``ui()`` runs more than once (the API calls it to read defaults), so building the UI has no side
effects besides the components. Labels key users' saved defaults (ui-config.json) and
localizations: keep them stable.
"""

from __future__ import annotations

from typing import Any

from lib_hidiff.unet.presets import PRESETS, TIME_MODES, UPSCALE_MODES

from . import infotext, paste, settings
from .args import FIELDS, HIRES_POLICIES

__all__ = ["build"]

TOOLTIPS = {
    "preset": "auto: the official schedule for the loaded model (SD 1.x/2.x or SDXL) and the image size; "
    "sd15_* / sdxl_*: one official row; sdxl_turbo: SDXL-Turbo / Lightning",
    "raunet": "Resolution-aware UNet: the early steps run the top of the UNet at a lower resolution, "
    "fixing composition (no duplicates)",
    "mswmsa": "Shifted-window self-attention in the top UNet blocks: faster at large sizes",
    "custom_timing": "Use the T1 / T2 / aggressive values below instead of the preset's",
    "t1": "Fraction of the steps with RAU-Net's first part (SD: the down/upsampler; SDXL: the attention "
    "block pair)",
    "t2": "Fraction of the steps with RAU-Net's second part (SD: the attention block pair; SDXL: the "
    "down/upsampler); 0 = off",
    "aggressive": "SDXL below 4096 px: the first part of the schedule uses the down/upsampler, the rest "
    "of T1 the attention pair; 0 = off",
    "time_mode": "percent: fractions of the sampling steps (official rule); sigma: fractions of model "
    "time (0 = pure noise, 1 = clean), the same at any step count and in img2img",
    "msw_start": "MSW-MSA starts at this fraction of the schedule",
    "msw_end": "MSW-MSA stops at this fraction of the schedule",
    "rau_upscale": "Interpolation of RAU-Net's upsampler",
    "ca_upscale": "Interpolation that undoes RAU-Net's attention-block pooling",
    "hires": "Hires fix second pass: off (default; the composition is already there), MSW-MSA only "
    "(speed), or full",
}


def build(script: Any, is_img2img: bool) -> tuple[list[Any], list[tuple[Any, Any]], list[str]]:
    """Create the components; return (components in FIELDS order, infotext_fields, paste_field_names)."""
    import gradio as gr
    from modules.ui_components import InputAccordion

    def eid(name: str) -> str:
        return script.elem_id(name)

    def tip(name: str) -> dict[str, str]:
        return {"tooltip": TOOLTIPS[name]}

    c: dict[str, Any] = {}
    # No tooltip here: the WebUI passes InputAccordion's kwargs on to gr.Accordion, which takes none.
    with InputAccordion(False, label="HiDiffusion", elem_id=eid("enabled")) as enabled:
        c["enabled"] = enabled
        # The schedule hint (javascript/hidiffusion.js fills it): its own wrapping line under the
        # title, not the one-line header, where a long hint and its warning were cut off.
        gr.HTML(value="", elem_id=eid("size_hint"), elem_classes=["hidiffusion-size-hint"])
        with gr.Row():
            c["preset"] = gr.Dropdown(
                label="Preset",
                choices=list(PRESETS),
                value=settings.get("hidiffusion_default_preset"),
                elem_id=eid("preset"),
                **tip("preset"),
            )
            c["hires"] = gr.Radio(
                label="Hires fix pass",
                choices=list(HIRES_POLICIES),
                value=settings.get("hidiffusion_default_hires"),
                visible=not is_img2img,
                elem_id=eid("hires"),
                **tip("hires"),
            )
        with gr.Row():
            c["raunet"] = gr.Checkbox(
                label="RAU-Net",
                value=settings.get("hidiffusion_default_raunet"),
                elem_id=eid("raunet"),
                **tip("raunet"),
            )
            c["mswmsa"] = gr.Checkbox(
                label="MSW-MSA",
                value=settings.get("hidiffusion_default_mswmsa"),
                elem_id=eid("mswmsa"),
                **tip("mswmsa"),
            )
        with gr.Accordion(label="Advanced", open=False, elem_id=eid("advanced")):
            c["custom_timing"] = gr.Checkbox(
                label="Custom T1/T2", value=False, elem_id=eid("custom_timing"), **tip("custom_timing")
            )
            with gr.Row():
                for name, label in (("t1", "T1"), ("t2", "T2"), ("aggressive", "Aggressive fraction")):
                    c[name] = _fraction_slider(gr, label, name, eid)
            with gr.Row():
                c["time_mode"] = gr.Radio(
                    label="Time mode",
                    choices=list(TIME_MODES),
                    value="percent",
                    elem_id=eid("time_mode"),
                    **tip("time_mode"),
                )
                c["msw_start"] = _fraction_slider(gr, "MSW-MSA start", "msw_start", eid)
                c["msw_end"] = _fraction_slider(gr, "MSW-MSA end", "msw_end", eid)
            with gr.Row():
                c["rau_upscale"] = gr.Dropdown(
                    label="RAU-Net upscale",
                    choices=list(UPSCALE_MODES),
                    value="nearest",
                    elem_id=eid("rau_upscale"),
                    **tip("rau_upscale"),
                )
                c["ca_upscale"] = gr.Dropdown(
                    label="CA upscale",
                    choices=list(UPSCALE_MODES),
                    value="bicubic",
                    elem_id=eid("ca_upscale"),
                    **tip("ca_upscale"),
                )

    components = [c[f.name] for f in FIELDS]
    keys = [infotext.paste_key(f.name) for f in FIELDS]
    return components, paste.fields(components, keys), list(infotext.PASTE_KEYS)


def _fraction_slider(gr: Any, label: str, name: str, eid: Any) -> Any:
    default = next(f.default for f in FIELDS if f.name == name)
    return gr.Slider(
        label=label,
        minimum=0.0,
        maximum=1.0,
        step=0.01,
        value=default,
        elem_id=eid(name),
        tooltip=TOOLTIPS[name],
    )
