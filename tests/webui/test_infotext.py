"""Infotext keys: written only when on, stale keys removed, every field restored on paste."""

import pytest
from modules import infotext_utils

from lib_hidiff.webui import infotext
from lib_hidiff.webui.args import FIELDS, ScriptArgs, parse_args

CUSTOM = ScriptArgs(
    enabled=True,
    preset="sdxl_4096",
    raunet=False,
    mswmsa=True,
    custom_timing=True,
    t1=0.55,
    t2=0.15,
    aggressive=0.0,
    time_mode="sigma",
    msw_start=0.1,
    msw_end=0.75,
    rau_upscale="bilinear",
    ca_upscale="area",
    hires="MSW-MSA only",
)


def _line(params):
    """Render like the WebUI's create_infotext, then parse like its paste button."""
    text = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in {"Steps": 20, "Seed": 1, **params}.items())
    return infotext_utils.parse_generation_parameters("a prompt\n" + text)


def test_nothing_written_when_off_and_stale_keys_removed():
    params = {"Steps": 20}
    infotext.write(params, CUSTOM, hires=True)
    assert set(infotext.PASTE_KEYS) >= set(params) - {"Steps"}
    infotext.write(params, ScriptArgs(enabled=False))
    assert params == {"Steps": 20}


def test_defaults_write_only_the_core_keys():
    params = {}
    infotext.write(params, parse_args([True]))
    assert params == {
        "HiDiffusion": True,
        "HiDiffusion preset": "auto",
        "HiDiffusion RAU-Net": True,
        "HiDiffusion MSW-MSA": True,
    }


@pytest.mark.parametrize(
    "args", [CUSTOM, parse_args([True]), parse_args([{"enabled": True, "t1": 0.3, "hires": "full"}])]
)
def test_round_trip_through_text(args):
    params = {}
    infotext.write(params, args, hires=True)
    parsed = _line(params)
    assert infotext.args_from_infotext(parsed) == args
    assert infotext.args_from_infotext(parsed).settings() == args.settings()


def test_paste_values_per_field():
    params = {}
    infotext.write(params, CUSTOM, hires=True)
    parsed = _line(params)
    values = {f.name: infotext.paste_value(f.name)(parsed) for f in FIELDS}
    assert values == {f.name: getattr(CUSTOM, f.name) for f in FIELDS}


def test_image_without_hidiffusion_unticks_and_leaves_the_rest():
    parsed = _line({"Sampler": "Euler"})
    assert infotext.paste_value("enabled")(parsed) is False
    for f in FIELDS[1:]:
        assert infotext.paste_value(f.name)(parsed) is None  # None = "no update" for the paste button


def test_absent_advanced_keys_paste_builtin_defaults():
    parsed = _line({"HiDiffusion": True, "HiDiffusion preset": "sd15_1024"})
    assert infotext.paste_value("time_mode")(parsed) == "percent"
    assert infotext.paste_value("msw_end")(parsed) == 1.0
    assert infotext.paste_value("custom_timing")(parsed) is False
    assert infotext.paste_value("t1")(parsed) is None  # keep the slider; custom timing is off anyway
    assert infotext.paste_value("hires")(parsed) is None  # job had no hires pass


def test_malformed_values_do_not_crash_paste():
    parsed = _line({"HiDiffusion": True, "HiDiffusion T1": "lots", "HiDiffusion MSW-MSA window": "0.5"})
    assert infotext.paste_value("t1")(parsed) is None
    assert infotext.paste_value("msw_start")(parsed) is None
    assert infotext.paste_value("enabled")(parsed) is True
