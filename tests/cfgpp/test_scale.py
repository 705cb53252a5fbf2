"""λ from the UI's CFG scale, and the per-step equivalent plain-CFG scale."""

from __future__ import annotations

import math

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import ALPHAS_CUMPROD, SIGMA_MAX, SIGMA_MIN


def test_lambda_from_cfg_by_mode():
    assert cfgpp.SCALE_MODES == ("cfg/12.5", "raw")
    assert cfgpp.lambda_from_cfg(7) == pytest.approx(0.56)  # WebUI 1.10 "DDIM CFG++" default mode
    assert cfgpp.lambda_from_cfg(12.5, "cfg/12.5") == 1.0
    assert cfgpp.lambda_from_cfg(1.6, "raw") == 1.6
    assert cfgpp.lambda_from_cfg(0, "raw") == 0.0
    for mode in cfgpp.SCALE_MODES:
        for cfg in (0.0, 1.0, 7.5, 30.0):
            assert cfgpp.cfg_from_lambda(cfgpp.lambda_from_cfg(cfg, mode), mode) == pytest.approx(cfg)


@pytest.mark.parametrize(
    "call,needles",
    [
        (lambda: cfgpp.lambda_from_cfg(7, "cfg/10"), ["CFG++ scale mode", "'cfg/12.5'", "'raw'", "'cfg/10'"]),
        (lambda: cfgpp.lambda_from_cfg(-1), ["CFG scale", ">= 0", "-1"]),
        (lambda: cfgpp.lambda_from_cfg(math.nan, "raw"), ["CFG scale", "finite"]),
        (lambda: cfgpp.lambda_from_cfg(math.inf), ["CFG scale", "finite"]),
        (lambda: cfgpp.lambda_from_cfg("seven"), ["CFG scale", "'seven'"]),
        (lambda: cfgpp.cfg_from_lambda(-0.5), ["CFG++ scale λ", ">= 0"]),
        (lambda: cfgpp.equivalent_cfg_scales(torch.tensor([1.0]), 0.5), ["at least 2"]),
        (lambda: cfgpp.equivalent_cfg_scales(torch.tensor([1.0, 2.0, 0.0]), 0.5), ["strictly decreasing"]),
        (lambda: cfgpp.equivalent_cfg_scales(torch.tensor([1.0, -1.0]), 0.5), [">= 0"]),
        (lambda: cfgpp.equivalent_cfg_scales(torch.tensor([2.0, 1.0]), -1), ["CFG++ scale λ"]),
    ],
)
def test_bad_values_name_the_setting_and_range(call, needles):
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_equivalent_scale_formula():
    sigmas = torch.tensor([10.0, 4.0, 1.0, 0.0])
    w = cfgpp.equivalent_cfg_scales(sigmas, 0.5)
    assert w.dtype == torch.float64
    assert w.tolist() == pytest.approx([0.5 * 10 / 6, 0.5 * 4 / 3, 0.5])


def _stats(sigmas):
    w = cfgpp.equivalent_cfg_scales(sigmas, 1.0)
    return [round(float(v), 2) for v in (w.min(), w.quantile(0.5), w.max())]


@pytest.mark.parametrize(
    "grid,expected",
    [
        ("ddim 20", [1.22, 5.62, 6.62]),
        ("ddim 30", [1.29, 8.03, 9.76]),
        ("ddim 50", [1.41, 12.85, 15.77]),
        ("karras 10", [1.00, 2.03, 2.65]),
        ("karras 20", [1.00, 3.71, 5.06]),
        ("karras 30", [1.00, 5.41, 7.48]),
        ("karras 50", [1.00, 8.83, 12.33]),
    ],
)
def test_equivalent_scale_table_of_the_design_notes(grid, expected):
    """CFGPP.md §1.3: w_n / λ (min, median, max) on SD1.5's schedule; DDIM is the built-in's grid."""
    kind, steps = grid.split()
    if kind == "ddim":
        sigmas = cfgpp.ddim_sigmas(ALPHAS_CUMPROD, int(steps), final_zero=False)
    else:
        sigmas = ks.get_sigmas_karras(int(steps), SIGMA_MIN, SIGMA_MAX).double()
    assert _stats(sigmas) == expected
    print(f"\n[cfgpp w_n/λ] {grid:10s} min/median/max = {_stats(sigmas)}")
