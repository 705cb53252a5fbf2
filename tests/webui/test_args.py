"""The script's argument contract: positional order, API dicts, XYZ overrides, one-line errors."""

import pytest

from lib_hidiff.unet.presets import HiDiffusionSettings
from lib_hidiff.webui.args import FIELDS, XYZ_ATTRS, ArgsError, ScriptArgs, parse_args, xyz_overrides


def test_positional_order_is_the_published_contract():
    # Saved API calls and ui-config.json depend on this order: fields may only be appended.
    assert [f.name for f in FIELDS] == [
        "enabled",
        "preset",
        "raunet",
        "mswmsa",
        "custom_timing",
        "t1",
        "t2",
        "aggressive",
        "time_mode",
        "msw_start",
        "msw_end",
        "rau_upscale",
        "ca_upscale",
        "hires",
    ]


def test_defaults_and_short_lists():
    assert parse_args([]) == ScriptArgs()
    assert parse_args(None) == ScriptArgs()
    a = parse_args([True])  # the API's {"args": [true]}: enable with defaults
    assert a.enabled and a.preset == "auto" and a.raunet and a.mswmsa and a.hires == "off"
    assert a.settings() == HiDiffusionSettings()


def test_none_slots_mean_default():
    a = parse_args([True, None, None, False])
    assert a.preset == "auto" and a.raunet is True and a.mswmsa is False


def test_full_positional_list():
    a = parse_args(
        [
            True,
            "sd15_2048",
            False,
            True,
            True,
            0.5,
            0.25,
            0.1,
            "sigma",
            0.2,
            0.9,
            "bicubic",
            "bilinear",
            "full",
        ]
    )
    s = a.settings()
    assert (s.preset, s.raunet, s.mswmsa, s.t1, s.t2, s.aggressive) == (
        "sd15_2048",
        False,
        True,
        0.5,
        0.25,
        0.1,
    )
    assert (s.time_mode, s.msw_start, s.msw_end, s.rau_upscale, s.ca_upscale) == (
        "sigma",
        0.2,
        0.9,
        "bicubic",
        "bilinear",
    )
    assert a.hires == "full"


def test_preset_timing_unless_custom():
    a = parse_args([True, "auto", True, True, False, 0.9, 0.9, 0.9])
    s = a.settings()
    assert s.t1 is None and s.t2 is None and s.aggressive is None


def test_dict_args():
    a = parse_args([{"enabled": True, "preset": "sdxl_2048", "t1": 0.5}])
    assert a.enabled and a.preset == "sdxl_2048"
    s = a.settings()
    assert s.t1 == 0.5 and s.t2 == 0.0  # naming a timing value in the API means "custom timing"
    assert parse_args([{"enabled": True, "custom_timing": False, "t1": 0.5}]).settings().t1 is None
    assert parse_args([{"preset": "sd15_1024"}]).enabled  # a settings dict asks for HiDiffusion
    assert not parse_args([{"enabled": False, "preset": "sd15_1024"}]).enabled


def test_dict_in_slot_zero_keeps_the_ui_defaults_in_the_other_slots():
    # The API copies [dict] over the defaults it read from ui(): slots 1.. hold e.g. a default preset.
    a = parse_args(
        [
            {"t1": 0.5},
            "sd15_2048",
            True,
            False,
            False,
            0.4,
            0.0,
            0.16,
            "percent",
            0,
            1,
            "nearest",
            "bicubic",
            "full",
        ]
    )
    assert (a.enabled, a.preset, a.mswmsa, a.hires, a.t1, a.custom_timing) == (
        True,
        "sd15_2048",
        False,
        "full",
        0.5,
        True,
    )


def test_strings_from_json_or_xyz_are_accepted():
    a = parse_args([{"enabled": "true", "t1": "0.3", "raunet": "False"}])
    assert a.enabled and a.t1 == 0.3 and a.raunet is False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([{"enabled": True, "preset": "sd15_4096"}], ["'preset'", "sd15_1024", "sd15_4096"]),
        ([{"enabled": "yes"}], ["'enabled'", "true or false", "'yes'"]),
        ([{"enabled": True, "t1": 1.5}], ["'t1'", "[0, 1]", "1.5"]),
        ([{"enabled": True, "t2": "abc"}], ["'t2'", "[0, 1]"]),
        ([{"enabled": True, "t1": float("nan")}], ["'t1'", "[0, 1]"]),
        ([{"enabled": True, "time_mode": "steps"}], ["'time_mode'", "percent", "sigma"]),
        ([{"enabled": True, "hires": "half"}], ["'hires'", "MSW-MSA only"]),
        ([{"enabled": True, "strength": 1}], ["'strength'", "unknown", "enabled"]),
        ([True, "auto", 3], ["'raunet'", "true or false"]),
        ([True] * 15, ["at most 14"]),
        ([{"enabled": True, "msw_start": 0.8, "msw_end": 0.2}], ["'msw_start'", "'msw_end'"]),
    ],
)
def test_bad_values_give_one_line_naming_the_argument(args, words):
    with pytest.raises(ArgsError) as info:
        parse_args(args)
    message = str(info.value)
    assert "\n" not in message and message.startswith("HiDiffusion")
    for word in words:
        assert word in message


def test_xyz_overrides_win_and_come_from_p_attributes():
    class P:
        pass

    p = P()
    p.hidiff_enabled = True
    p.hidiff_t1 = 0.25
    p.hidiff_preset = "sd15_1024"
    overrides = xyz_overrides(p)
    assert overrides == {"enabled": True, "t1": 0.25, "preset": "sd15_1024"}
    a = parse_args([False, "auto"], overrides)
    assert a.enabled and a.preset == "sd15_1024" and a.settings().t1 == 0.25
    assert set(XYZ_ATTRS) == {
        "hidiff_enabled",
        "hidiff_preset",
        "hidiff_raunet",
        "hidiff_mswmsa",
        "hidiff_t1",
        "hidiff_t2",
    }


def test_library_setting_errors_surface_as_args_errors():
    # A combination only the library checks still gives one ArgsError line.
    a = ScriptArgs(enabled=True, msw_start=0.5, msw_end=0.5)
    assert a.settings().msw_start == 0.5
    with pytest.raises(ArgsError):
        ScriptArgs(enabled=True, preset="nope").settings()
