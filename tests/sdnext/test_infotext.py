"""Infotext between A1111 and SD.Next: an image made in either restores the same HiDiffusion and CFG++
settings in the fake SD.Next, through SD.Next's own parser and paste (which reads keys of word
characters and spaces only, and has a "HiDiffusion" checkbox of its own)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from modules import generation_parameters_copypaste as copypaste
from modules import infotext as sdnext_infotext
from modules import shared
from modules.api import endpoints

from lib_hidiff.webui import infotext, inversion_args, inversion_infotext, inversion_ui
from lib_hidiff.webui.args import FIELDS, ScriptArgs, parse_args

SETTINGS = ScriptArgs(
    enabled=True,
    preset="sd15_2048",
    raunet=False,
    mswmsa=True,
    custom_timing=True,
    t1=0.35,
    t2=0.05,
    aggressive=0.2,
    time_mode="sigma",
    msw_start=0.1,
    msw_end=0.9,
    rau_upscale="bicubic",
    ca_upscale="nearest",
    hires="MSW-MSA only",
)


def a1111_infotext(extra: dict) -> str:
    """An infotext as AUTOMATIC1111 1.10 writes it (processing.py create_infotext; values with , : or a
    newline JSON-quoted, infotext_utils.py:56-60)."""

    def quote(v):
        return json.dumps(v, ensure_ascii=False) if any(c in str(v) for c in ",:\n") else v

    params = {
        "Steps": 20,
        "Sampler": "Euler CFG++",
        "Schedule type": "Automatic",
        "CFG scale": 7,
        "Seed": 1,
        "Size": "1024x1024",
        "Model": "sd15",
        **extra,
        "Version": "v1.10.1",
    }
    text = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items())
    return f"a cat\nNegative prompt: blurry\n{text}"


def _pasted_args(values: list) -> ScriptArgs:
    """What the accordion holds after a paste (None: the field kept its default)."""
    defaults = {f.name: f.default for f in FIELDS}
    return parse_args([defaults[f.name] if v is None else v for f, v in zip(FIELDS, values)])


def test_an_a1111_image_restores_the_same_settings_in_sdnext(sdnext):
    extra: dict = {}
    infotext.write(extra, SETTINGS, hires=True)
    extra.update({"CFGpp scale": 0.56, "CFGpp scale mode": "cfg/12.5"})
    params, core, ours = sdnext.paste(a1111_infotext(extra))
    assert _pasted_args(ours) == SETTINGS
    assert core["HiDiffusion"] is None  # SD.Next's own HiDiffusion checkbox is left alone
    assert core["Sampler"] == "Euler CFG++"
    assert "Net" not in params and "MSA" not in params  # the keys SD.Next's parser cut are repaired


def test_an_sdnext_image_restores_its_settings(sdnext):
    sdnext.load_model()
    args = [getattr(SETTINGS, f.name) for f in FIELDS]
    _, res = sdnext.txt2img(args, enable_hr=True, hr_scale=2, hr_denoising_strength=0.5, steps=2)
    text = res.infotexts[0]
    assert "HiDiffusion RAU-Net: False" in text and "HiDiffusion MSW-MSA window: 0.1-0.9" in text
    params, core, ours = sdnext.paste(text)
    assert _pasted_args(ours) == SETTINGS and core["HiDiffusion"] is None


def test_sdnext_own_hidiffusion_infotext_ticks_only_sdnext_checkbox(sdnext):
    params, core, ours = sdnext.paste(a1111_infotext({"HiDiffusion": "True/True/True:8"}))
    assert core["HiDiffusion"] is True
    assert ours[0] is False and all(v is None for v in ours[1:])


def test_an_infotext_without_hidiffusion_unticks_ours_and_leaves_the_rest(sdnext):
    params, core, ours = sdnext.paste(a1111_infotext({}))
    assert ours[0] is False and all(v is None for v in ours[1:]) and core["HiDiffusion"] is None


def test_png_info_api_gets_our_keys_whole(sdnext):
    extra: dict = {}
    infotext.write(extra, SETTINGS, hires=True)
    params = endpoints.post_pnginfo(a1111_infotext(extra))["parameters"]
    assert params["HiDiffusion RAU-Net"] is False and params["HiDiffusion MSW-MSA"] is True
    assert (
        params["HiDiffusion MSW-MSA window"] == "0.1-0.9"
        and params["HiDiffusion RAU-Net upscale"] == "bicubic"
    )
    assert params["HiDiffusion preset"] == "sd15_2048"


@pytest.mark.parametrize(
    ("key", "setting", "value"),
    [
        ("CFGpp scale mode", "cfgpp_scale_mode", "raw"),
        ("CFGpp 2M variant", "cfgpp_dpmpp_2m_variant", "B"),
        ("CFGpp hires scale", "cfgpp_hires_scale", 0.3),
    ],
)
def test_cfgpp_settings_come_back_as_sdnext_override_settings(sdnext, key, setting, value):
    assert (key, setting) in sdnext_infotext.mapping  # SD.Next's only source of pasted overrides
    params, _, _ = sdnext.paste(a1111_infotext({key: value}))
    assert shared.opts.cast_value(setting, params[key]) == value


# -- Restore: SD.Next's paste handler with the extension installed (issue 15) -------------------
HIDIFF_EXTRA: dict = {}
infotext.write(HIDIFF_EXTRA, SETTINGS, hires=True)
KINDS = {
    "plain": ({}, "Euler a"),
    "hidiffusion": (HIDIFF_EXTRA, "Euler a"),
    "cfgpp": ({"CFGpp scale": 0.56, "CFGpp scale mode": "cfg/12.5"}, "Euler CFG++"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_restore_sets_sdnext_fields_and_ours_for_every_kind_of_infotext(sdnext, kind):
    """SD.Next's handler calls should_skip(key) -- key.lower() -- on every value that is not a
    gr.update (generation_parameters_copypaste.py@058a7f0c:304, :182): an extension's paste entry
    must not make it raise, or nothing at all is restored."""
    extra, sampler = KINDS[kind]
    text = a1111_infotext({**extra, "Sampler": sampler, "Steps": 6})
    params, core, ours = sdnext.paste(text)
    assert core["Prompt"] == "a cat" and core["Steps"] == 6 and core["Sampler"] == sampler
    assert core["HiDiffusion"] is None  # SD.Next's own HiDiffusion checkbox: never ticked by ours
    if kind == "hidiffusion":
        assert _pasted_args(ours) == SETTINGS
    else:
        assert ours[0] is False and all(v is None for v in ours[1:])  # unticked, the rest left alone


def test_keyed_fields_are_the_same_in_both_tabs(sdnext):
    """SD.Next's "Send to" copy pairs the named fields of two tabs by position
    (generation_parameters_copypaste.py@058a7f0c:236-241): ours are the same, in the same order."""
    names = [
        [key for _, key in sdnext.runner(tab).infotext_fields if isinstance(key, str)]
        for tab in ("txt2img", "img2img")
    ]
    assert names[0] == names[1] == [infotext.KEYS[n] for n in infotext.KEYED_FIELDS]


def test_sdnext_skip_params_setting_applies_to_our_keyed_fields(sdnext):
    """Our one-key fields are pasted by their key, so SD.Next's "skip params" setting reaches them."""
    shared.opts.data["disable_apply_params"] = "HiDiffusion preset, Steps"
    _, core, ours = sdnext.paste(a1111_infotext({**HIDIFF_EXTRA, "Steps": 6}))
    assert core["Steps"] is None and ours[[f.name for f in FIELDS].index("preset")] is None
    assert ours[0] is True and ours[[f.name for f in FIELDS].index("raunet")] is False


def test_inversion_fields_restore_through_sdnext_paste(sdnext):
    """The CFG++ inversion accordion's paste entries (img2img) on SD.Next's handler."""
    script = SimpleNamespace(elem_id=lambda name: f"script_img2img_cfgpp_inversion_{name}")
    _, fields, names = inversion_ui.build(script, True)
    assert names == list(inversion_infotext.PASTE_KEYS)
    # img2img only: no keys, which the tab-to-tab copy would pair by position with txt2img's fields
    assert all(callable(key) for _, key in fields)
    extra: dict = {}
    inversion_infotext.write(extra, inversion_args.InversionArgs(True, "a red, fox", 5.0, 2))
    core = sdnext.core_fields("img2img")
    _, values = copypaste.paste_values(a1111_infotext({**extra, "Steps": 6}), [*core, *fields])
    assert values[1] == 6 and values[len(core) :] == [True, "a red, fox", 5.0, 2]
    _, values = copypaste.paste_values(a1111_infotext({"Steps": 6}), [*core, *fields])
    assert values[1] == 6 and values[len(core) :] == [False, None, None, None]
