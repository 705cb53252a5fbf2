"""Equivalence with the official implementation (hidiffusion 0.1.10 on a diffusers twin).

All UNets hold the same random weights: an ldm UNet, its diffusers twin (diffusers' own converter)
running the official code, and an untouched copy of that twin running ours. The official code's
step counters are set to step i of N and its ``torch.rand`` is scripted to the shift bucket k; ours
gets the clock (i, N) and the fixed shift k. Every case checks both of our backends against the
official output, and our two backends against each other (cross-backend). The grid crosses every
threshold: RAD on/off, CA on/off, the SDXL aggressive boundary, the 2048/4096 row switch, the Turbo
row, non-square and odd feature maps.
"""

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

import lib_hidiff as hd
from lib_hidiff import zoo

from .helpers import call, inputs, tiny, tiny_diffusers

TOL = 1e-4  # relative, against the official output
CROSS_TOL = 1e-5  # relative, ours on ldm against ours on diffusers
MAX_REL: dict[str, float] = {}  # "<backend> <family>" -> max relative difference to the official output
MAX_CROSS: dict[str, float] = {}  # family -> max relative difference between our two backends


@dataclass
class Oracle:
    """An ldm UNet, the official code on its diffusers twin, and our diffusers UNet (a twin copy)."""

    unet: torch.nn.Module
    off: zoo.OfficialHiDiffusion
    diffusers: torch.nn.Module


@pytest.fixture(scope="module")
def oracles():
    made = {}

    def get(family: str, model: str, fresh_key: str = "", **kw):
        key = (family, model, fresh_key)
        if key not in made:
            unet = tiny(family, **kw)
            twin = zoo.diffusers_twin(unet, family)
            ours = copy.deepcopy(twin)  # before the official code patches the twin's classes
            made[key] = Oracle(unet, zoo.OfficialHiDiffusion(twin, model, steps=50), ours)
        return made[key]

    yield get
    for oracle in made.values():
        oracle.off.remove()


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def _record(table: dict[str, float], key: str, value: float) -> None:
    table[key] = max(table.get(key, 0.0), value)


def _check(oracle, family, preset, hw, n, steps, k):
    unet, off, twin = oracle.unet, oracle.off, oracle.diffusers
    x, t, c = inputs(unet, *hw, seed=hw[0] * 7 + hw[1])
    off.pipe._num_timesteps = n
    vanilla = None
    if hw[0] * hw[1] <= 176 * 136:  # un-windowed attention at the largest sizes would dominate the suite
        try:
            vanilla = call(unet, x, t, c)
        except RuntimeError:  # plain ldm cannot concatenate odd-size skips; HiDiffusion targets them exactly
            pass
    for i in steps:
        with torch.no_grad():
            want = off(x, t, c, step=i, shift_k=k)
        settings = hd.HiDiffusionSettings(preset=preset, msw_shift=k)
        got = {}
        for name, model in (("ldm", unet), ("diffusers", twin)):
            with hd.apply_hidiffusion(model, settings, progress=lambda i=i: (i, n), seed=0):
                got[name] = call(model, x, t, c)
            assert got[name].shape == (x.shape[0], 4, *x.shape[2:])
            rel = _rel(got[name], want)
            _record(MAX_REL, f"{name} {family}", rel)
            print(f"{name} {family} {preset} {hw[0]}x{hw[1]} N={n} i={i} k={k}: max rel diff {rel:.2e}")
            assert rel <= TOL, f"{name}, step {i}: {rel}"
        cross = _rel(got["ldm"], got["diffusers"])
        _record(MAX_CROSS, family, cross)
        assert cross <= CROSS_TOL, f"ldm vs diffusers, step {i}: {cross}"
        if vanilla is not None:
            assert ((vanilla - want).abs().max() / want.abs().max()).item() > 1e-2  # HiDiffusion did act


@contextmanager
def official_row(small: str, large: str, aggressive: bool | None = None):
    """Make the official code use its ``large`` table row at sizes where it would pick ``small``.

    The official rows switch at absolute sizes (SD 2048 px, SDXL 4096 px). A few real-size cases
    below prove the switch itself; the thresholds of the large rows are crossed at half the size by
    pointing the official small-row entry at the large row (module globals, as upstream documents).
    """
    import hidiffusion.hidiffusion as official

    table = dict(official.switching_threshold_ratio_dict)
    table[small] = table[large]
    patches = [mock.patch.object(official, "switching_threshold_ratio_dict", table)]
    if aggressive is not None:
        patches.append(mock.patch.object(official, "is_aggressive_raunet", aggressive))
    for p in patches:
        p.start()
    try:
        yield
    finally:
        for p in reversed(patches):
            p.stop()


SD1_GRID = [
    ((80, 80), 10, (0, 3, 4, 9), 1),  # RAD/RAU for i < int(10*0.4) = 4
    ((72, 104), 10, (0, 4), 2),  # non-square
    ((90, 65), 10, (0, 4), 3),  # odd latent: odd MSW-MSA maps (bicubic fallback), ceil sizes everywhere
]


@pytest.mark.parametrize(("hw", "n", "steps", "k"), SD1_GRID)
def test_sd15_layout_matches_official(oracles, hw, n, steps, k):
    _check(oracles("sd1", "sd1"), "sd1", "auto", hw, n, steps, k)


def test_sd15_2048_row_thresholds_match_official(oracles):
    with official_row("sd15_1024", "sd15_2048"):  # CA for i < int(20*0.3) = 6, RAD for i < 14
        _check(oracles("sd1", "sd1"), "sd1", "sd15_2048", (88, 72), 20, (5, 6, 13, 14), 2)


def test_sd15_2048_row_at_real_size_matches_official(oracles):
    _check(oracles("sd1", "sd1"), "sd1", "auto", (256, 256), 10, (2,), 0)  # auto picks the 2048 row: RAD + CA


def test_sd2_layout_matches_official(oracles):
    _check(oracles("sd2", "sd2"), "sd2", "auto", (80, 72), 10, (0, 4), 1)


SDXL_GRID = [
    ((144, 144), 50, (7, 8, 19, 20), 1),  # aggressive: RAD for i < 8, CA for 8 <= i < 20
    ((176, 136), 50, (0, 8, 20), 3),  # non-square
    ((138, 130), 50, (0, 8), 2),  # odd level-1 map (69 x 65): odd MSW-MSA maps, odd pools
]


@pytest.mark.parametrize(("hw", "n", "steps", "k"), SDXL_GRID)
def test_sdxl_layout_matches_official(oracles, hw, n, steps, k):
    _check(oracles("sdxl", "sdxl"), "sdxl", "auto", hw, n, steps, k)


def test_sdxl_4096_row_thresholds_match_official(oracles):
    # A fresh official instance: upstream keeps a stale aggressive flag after a < 4096 run (its bug B5).
    oracle = oracles("sdxl", "sdxl", fresh_key="4096")
    with official_row("sdxl_2048", "sdxl_4096", aggressive=False):  # RAD for i < 15, CA for i < 35
        _check(oracle, "sdxl", "sdxl_4096", (144, 136), 50, (14, 15, 34, 35), 0)


def test_sdxl_4096_row_at_real_size_matches_official(oracles):
    _check(
        oracles("sdxl", "sdxl", fresh_key="4096-real"), "sdxl", "auto", (512, 512), 10, (2,), 1
    )  # auto picks the 4096 row: RAD + CA


def test_sdxl_turbo_row_matches_official(oracles):
    _check(
        oracles("sdxl", "sdxl_turbo"), "sdxl", "sdxl_turbo", (144, 144), 4, (1, 2), 3
    )  # CA only, for i < int(4*0.5)


def test_sdxl_inpainting_matches_official(oracles):
    # Upstream runs inpainting models without the aggressive schedule: CA for i < 20, never RAD.
    _check(oracles("sdxl", "sdxl_inpainting", in_channels=9), "sdxl", "auto", (144, 136), 50, (0, 19, 20), 2)


def test_diffusers_unet_built_from_its_own_config_matches_official():
    # Not a converted twin: a UNet2DConditionModel made by diffusers from a config, weights drawn there.
    ours = tiny_diffusers("sd1", seed=11)
    off = zoo.OfficialHiDiffusion(copy.deepcopy(ours), "sd1", steps=10)
    try:
        x, t, c = inputs(ours, 88, 72, seed=5)
        for i in (0, 4):
            with torch.no_grad():
                want = off(x, t, c, step=i, shift_k=2)
            with hd.apply_hidiffusion(
                ours, hd.HiDiffusionSettings(msw_shift=2), progress=lambda i=i: (i, 10)
            ):
                got = call(ours, x, t, c)
            rel = _rel(got, want)
            _record(MAX_REL, "diffusers sd1", rel)
            assert rel <= TOL, f"step {i}: {rel}"
    finally:
        off.remove()


def test_report_max_differences():
    print(
        "max relative difference to the official implementation:", {k: f"{v:.1e}" for k, v in MAX_REL.items()}
    )
    print("max relative difference ldm vs diffusers (ours):", {k: f"{v:.1e}" for k, v in MAX_CROSS.items()})
    assert {k.split()[0] for k in MAX_REL} == {"ldm", "diffusers"}
    assert all(v <= TOL for v in MAX_REL.values()) and all(v <= CROSS_TOL for v in MAX_CROSS.values())
