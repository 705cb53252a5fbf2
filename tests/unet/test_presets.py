"""Presets are data; settings validate with one clear line naming the setting and the range."""

import pytest

import lib_hidiff as hd
from lib_hidiff.unet.patcher import in_window
from lib_hidiff.unet.presets import OFFICIAL_ROWS, row_for


@pytest.mark.parametrize(
    ("family", "hw", "key"),
    [
        ("sd1", (128, 128), "sd15_1024"),
        ("sd1", (256, 128), "sd15_1024"),  # official OR rule: one short side keeps the 1024 row
        ("sd2", (256, 256), "sd15_2048"),
        ("sdxl", (256, 256), "sdxl_2048"),
        ("sdxl", (512, 256), "sdxl_2048"),
        ("sdxl", (512, 512), "sdxl_4096"),
    ],
)
def test_auto_row_follows_the_official_size_switch(family, hw, key):
    assert row_for("auto", family, hw).key == key


def test_official_table_values():
    got = {k: (r.t1, r.t2, r.aggressive) for k, r in OFFICIAL_ROWS.items()}
    assert got == {
        "sd15_1024": (0.4, 0.0, None),
        "sd15_2048": (0.7, 0.3, None),
        "sdxl_2048": (0.4, 0.0, 8 / 50),
        "sdxl_4096": (0.7, 0.3, None),
        "sdxl_turbo": (0.5, 0.0, None),
    }


def test_windows_per_family_roles():
    s = hd.HiDiffusionSettings()
    assert s.windows(OFFICIAL_ROWS["sd15_2048"]) == {"rad": (0.0, 0.7), "ca": (0.0, 0.3)}
    assert s.windows(OFFICIAL_ROWS["sdxl_2048"]) == {"rad": (0.0, 0.16), "ca": (0.16, 0.4)}
    assert s.windows(OFFICIAL_ROWS["sdxl_4096"]) == {"rad": (0.0, 0.3), "ca": (0.0, 0.7)}
    assert s.windows(OFFICIAL_ROWS["sdxl_turbo"]) == {"rad": (0.0, 0.0), "ca": (0.0, 0.5)}
    # Overrides: T1/T2 keep their family roles; aggressive=0 turns the two-phase schedule off.
    o = hd.HiDiffusionSettings(t1=0.5, t2=0.2, aggressive=0.0)
    assert o.windows(OFFICIAL_ROWS["sdxl_2048"]) == {"rad": (0.0, 0.2), "ca": (0.0, 0.5)}
    assert o.windows(OFFICIAL_ROWS["sd15_1024"]) == {"rad": (0.0, 0.5), "ca": (0.0, 0.2)}
    assert hd.HiDiffusionSettings(aggressive=0.1).windows(OFFICIAL_ROWS["sdxl_2048"]) == {
        "rad": (0.0, 0.1),
        "ca": (0.1, 0.4),
    }


def test_inpainting_models_skip_the_aggressive_schedule_like_upstream():
    row = OFFICIAL_ROWS["sdxl_2048"]
    assert hd.HiDiffusionSettings().windows(row, inpainting=True) == {"rad": (0.0, 0.0), "ca": (0.0, 0.4)}
    assert hd.HiDiffusionSettings(aggressive=0.2).windows(row, inpainting=True) == {
        "rad": (0.0, 0.2),
        "ca": (0.2, 0.4),
    }


@pytest.mark.parametrize("n", [1, 4, 7, 10, 20, 25, 30, 50])
def test_integer_window_rule_matches_the_official_expressions(n):
    for ratio in (0.3, 0.4, 0.5, 0.7):
        assert [in_window((i, n), (0.0, ratio)) for i in range(n)] == [i < int(n * ratio) for i in range(n)]
        assert [in_window((i, n), (8 / 50, ratio)) for i in range(n)] == [
            int(8 / 50 * n) <= i < int(n * ratio) for i in range(n)
        ]


def test_float_clock_and_whole_schedule_window():
    assert in_window(0.39, (0.0, 0.4)) and not in_window(0.4, (0.0, 0.4))
    assert in_window(1.0, (0.0, 1.0))  # the whole schedule includes its last step


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"preset": "sdxl_8192"}, "'preset' must be one of"),
        ({"t1": 1.5}, "'t1' must be a number in [0, 1]"),
        ({"t2": -0.1}, "'t2' must be a number in [0, 1]"),
        ({"aggressive": "x"}, "'aggressive' must be a number in [0, 1]"),
        ({"msw_start": 0.8, "msw_end": 0.2}, "'msw_start' must be <= 'msw_end'"),
        ({"msw_shift": 4}, "'msw_shift' must be an integer in 0..3"),
        ({"time_mode": "steps"}, "'time_mode' must be one of"),
        ({"rau_upscale": "lanczos"}, "'rau_upscale' must be one of"),
        ({"raunet": "yes"}, "'raunet' must be true or false"),
    ],
)
def test_bad_settings_raise_one_clear_line(kwargs, needle):
    with pytest.raises(hd.SettingsError) as err:
        hd.HiDiffusionSettings(**kwargs)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_fixed_preset_of_the_wrong_family_is_refused():
    with pytest.raises(hd.SettingsError, match="for SDXL models"):
        row_for("sdxl_2048", "sd1", (128, 128))
