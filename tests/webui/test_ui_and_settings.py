"""The accordion, its paste fields, the settings section, and the native-size hint route."""

from __future__ import annotations

import os

import pytest
from modules import script_callbacks, shared

from lib_hidiff.webui import hint, infotext, settings
from lib_hidiff.webui.args import FIELDS

from .webui_env import REPO, HybridModel, tiny_sd15_unet

LABELS = [
    "HiDiffusion",
    "Preset",
    "RAU-Net",
    "MSW-MSA",
    "Custom T1/T2",
    "T1",
    "T2",
    "Aggressive fraction",
    "Time mode",
    "MSW-MSA start",
    "MSW-MSA end",
    "RAU-Net upscale",
    "CA upscale",
    "Hires fix pass",
]


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_components_follow_the_argument_order(webui, tab):
    script = webui.script(tab=tab)
    controls = webui.runners[tab].inputs[script.args_from : script.args_to]
    assert [c.label for c in controls] == LABELS  # labels key users' saved defaults: keep them
    assert [c.value for c in controls] == [f.default for f in FIELDS]
    assert controls[0].elem_id == f"script_{tab}_hidiffusion_enabled-checkbox"
    assert all(c.elem_id.startswith(f"script_{tab}_hidiffusion_") for c in controls)
    assert all(c.tooltip for c in controls[1:])
    assert controls[-1].visible is (tab == "txt2img")  # hires fix exists on txt2img only
    assert len(script.infotext_fields) == len(FIELDS)
    assert script.paste_field_names == list(infotext.PASTE_KEYS)


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_paste_entries_are_keys_or_functions_giving_gr_updates(webui, tab):
    """One-key fields are pasted by their key (named in paste_field_names: "Send to img2img" copies
    them, infotext_utils.py@1.10.1:168-175); the others by a function giving a gr.update, the one
    form every host's paste handler uses as it is (lib_hidiff/webui/paste.py)."""
    import gradio as gr

    script = webui.script(tab=tab)
    on = {infotext.ENABLED: "True", infotext.KEYS["preset"]: "auto"}
    for f, (_, key) in zip(FIELDS, script.infotext_fields, strict=True):
        if f.name in infotext.KEYED_FIELDS:
            assert key == infotext.KEYS[f.name] and key in script.paste_field_names
            continue
        expected = infotext.paste_value(f.name)(on)
        assert key(on) == (None if expected is None else gr.update(value=expected))
    assert script.infotext_fields[0][1]({}) == gr.update(value=False)


def test_ui_can_be_built_again_without_side_effects(webui):
    # The API calls ui() twice more to read defaults; nothing may be registered again.
    counts = {k: len(v) for k, v in script_callbacks.callback_map.items()}
    script = webui.script()
    first = script.ui(False)
    second = script.ui(False)
    assert [c.value for c in first] == [c.value for c in second] == [f.default for f in FIELDS]
    assert first[0] is not second[0]
    assert {k: len(v) for k, v in script_callbacks.callback_map.items()} == counts


def test_settings_section_and_defaults_feed_the_ui(webui):
    labels = shared.opts.data_labels
    for key in settings.DEFAULTS:
        assert labels[key].section == ("hidiffusion", "HiDiffusion / CFG++")
        assert labels[key].category_id == "sd"
    assert labels["cfgpp_scale_mode"].infotext == "CFGpp scale mode"
    assert labels["cfgpp_dpmpp_2m_variant"].infotext == "CFGpp 2M variant"
    assert labels["hidiffusion_default_preset"].infotext is None  # UI defaults are not image settings
    shared.opts.data.update(
        hidiffusion_default_preset="sd15_2048",
        hidiffusion_default_hires="full",
        hidiffusion_default_mswmsa=False,
    )
    values = [c.value for c in webui.script().ui(False)]
    assert (values[1], values[3], values[13]) == ("sd15_2048", False, "full")


def test_options_are_read_even_when_the_settings_callback_never_ran(webui):
    # --nowebui: no settings UI, so no option registration; config.json values still count.
    del shared.opts.data_labels["cfgpp_scale_mode"]
    shared.opts.data.pop("cfgpp_scale_mode")
    assert settings.get("cfgpp_scale_mode") == "cfg/12.5"
    shared.opts.data["cfgpp_scale_mode"] = "raw"
    assert settings.get("cfgpp_scale_mode") == "raw"


def test_native_size_route(webui):
    route = next(r for r in webui.app.routes if r.path == hint.ROUTE)
    assert route.methods == ["GET"]
    assert route.endpoint()["supported"] is False  # nothing loaded: no model is loaded for a hint
    shared.sd_model = HybridModel(tiny_sd15_unet(), "base")
    assert route.endpoint() == {"supported": True, "hint": True, "family": "sd1", "width": 512, "height": 512}
    shared.sd_model.is_sd3 = True
    assert route.endpoint()["supported"] is False
    webui.reload()
    assert [r.path for r in webui.app.routes].count(hint.ROUTE) == 1


def test_javascript_hint_uses_the_ids_and_route_the_python_side_makes(webui):
    with open(os.path.join(REPO, "javascript", "hidiffusion.js"), encoding="utf-8") as f:
        js = f.read()
    script = webui.script()
    assert script.elem_id("size_hint") == "script_txt2img_hidiffusion_size_hint"
    assert "script_${tab}_hidiffusion_size_hint" in js
    assert "script_${tab}_hidiffusion_enabled-visible-checkbox" in js
    assert f'"./{hint.SCHEDULE_ROUTE.lstrip("/")}"' in js  # the hint shows the effective schedule
