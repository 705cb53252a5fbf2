"""HiDiffusion on diffusers UNet2DConditionModel: layout, removal guarantees, ControlNet, processors.

The same public API as on ldm (tests/unet/test_patcher.py holds the ldm cases); numbers against the
official code and the ldm backend are in test_oracle.py and test_cross_backend.py.
"""

import copy
import dataclasses
import logging

import pytest
import torch
import torch.nn as nn

import lib_hidiff as hd
from lib_hidiff import zoo
from lib_hidiff.unet import patcher

from .helpers import call, inputs, tiny, tiny_diffusers, traces

S = hd.HiDiffusionSettings
HW = (48, 40)  # below native size: the cases that are not about the gate lift it, to stay cheap


def G(**kw) -> hd.HiDiffusionSettings:
    """Settings with the native-size gate lifted (the official code has none)."""
    return S(gate=False, **kw)


@pytest.fixture(scope="module")
def d_sd1():
    return tiny_diffusers("sd1", seed=3)


@pytest.fixture(scope="module")
def d_sdxl():
    return tiny_diffusers("sdxl", seed=3)


@pytest.fixture()
def unet():
    return tiny_diffusers("sd1", seed=4)


def _instance_state(unet: nn.Module) -> dict[str, set[str]]:
    return {name: set(m.__dict__) for name, m in unet.named_modules()}


def _conv_params(unet: nn.Module) -> tuple:
    conv = unet.down_blocks[0].downsamplers[0].conv
    return conv.stride, conv.padding, conv.dilation


# -- layout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_layout_numbers_blocks_as_ldm_does(family):
    ldm = hd.inspect_unet(tiny(family))
    lay = hd.inspect_unet(tiny_diffusers(family))
    assert lay.backend == "diffusers"
    assert lay == dataclasses.replace(ldm, backend="diffusers")


def test_targets_are_the_diffusers_modules(d_sd1, d_sdxl):
    from lib_hidiff.unet.targets import targets_for

    t = targets_for(d_sd1, hd.inspect_unet(d_sd1))
    assert t.entry is d_sd1.conv_in and t.rad is d_sd1.down_blocks[0].downsamplers[0]
    assert t.skips[4] is d_sd1.down_blocks[1].attentions[0]  # CA pool after pair 0 of level 1
    assert t.ca_output is d_sd1.up_blocks[2].attentions[1]  # CA unpool after pair 1 of its mirror
    assert [(j, skip) for j, skip, _ in t.upsamples] == [(2, 8), (5, 5), (8, 2)]
    assert all(up is d_sd1.up_blocks[j // 3].upsamplers[0] for j, _, up in t.upsamples)
    assert [tr for tr, _ in t.transformers] == [
        *d_sd1.down_blocks[0].attentions,
        *d_sd1.up_blocks[3].attentions,
    ]
    assert [up for up, _ in t.controlnet.up_blocks] == list(d_sd1.up_blocks)
    assert [skips for _, skips in t.controlnet.up_blocks] == [(9, 10, 11), (6, 7, 8), (3, 4, 5), (0, 1, 2)]
    t = targets_for(d_sdxl, hd.inspect_unet(d_sdxl))
    assert t.rad is d_sdxl.down_blocks[1].downsamplers[0] and t.ca_output is d_sdxl.up_blocks[1].attentions[1]
    assert sum(len(a) for _, a in t.transformers) == 10  # both depths of every level-1 transformer


def test_sdxl_refiner_layout_is_refused():
    refiner = zoo.build_diffusers_unet("sdxl_refiner", 32, heads=2, context_dim=32, depths=(0, 1, 1, 0))
    with pytest.raises(hd.UnsupportedUNet, match="refiner"):
        hd.inspect_unet(refiner)


def test_unknown_modules_are_refused_with_one_line():
    with pytest.raises(hd.UnsupportedUNet) as err:
        hd.inspect_unet(nn.Linear(3, 3))
    assert "\n" not in str(err.value) and "down_blocks" in str(err.value)


def test_unsupported_diffusers_parts_are_refused_with_one_line():
    unet = tiny_diffusers("sd1", seed=1)
    unet.up_blocks[0].upsamplers[0].use_conv_transpose = True
    with pytest.raises(hd.UnsupportedUNet, match="interpolat"):
        hd.inspect_unet(unet)
    unet = tiny_diffusers("sd1", seed=1)
    down = unet.down_blocks[0].downsamplers[0]
    down.use_conv, down.conv = False, nn.AvgPool2d(2)
    with pytest.raises(hd.UnsupportedUNet, match="conv"):
        hd.inspect_unet(unet)
    unet = tiny_diffusers("sd1", seed=1)
    unet.down_blocks[1].__class__ = type("SimpleCrossAttnDownBlock2D", (nn.Module,), {})
    with pytest.raises(hd.UnsupportedUNet, match="SimpleCrossAttnDownBlock2D") as err:
        hd.inspect_unet(unet)
    assert "\n" not in str(err.value)


def test_unet_patched_by_the_official_code_is_refused_not_patched_twice():
    # The official package (and SD.Next's copy of it) swaps block classes: refuse, as a one-liner.
    off = zoo.OfficialHiDiffusion(tiny_diffusers("sd1", seed=2), "sd1", steps=10)
    try:
        with pytest.raises(hd.UnsupportedUNet, match="cross_attn_down_block"):
            hd.inspect_unet(off.unet)
    finally:
        off.remove()
    assert hd.inspect_unet(off.unet).family == "sd1"


def test_inpainting_and_768_v_native_size():
    lay = hd.inspect_unet(tiny_diffusers("sdxl", in_channels=9))
    assert lay.inpainting and lay.family == "sdxl"
    lay = hd.inspect_unet(tiny_diffusers("sd2")).with_native(96)
    assert lay.native == (96, 96) and lay.backend == "diffusers"


# -- removal guarantees ----------------------------------------------------------------------------


def test_outputs_bit_identical_after_the_with_block(unet):
    x, t, c = inputs(unet, *HW)
    keys, state, conv = list(unet.state_dict()), _instance_state(unet), _conv_params(unet)
    before = call(unet, x, t, c)
    with hd.apply_hidiffusion(unet, G(), progress=lambda: (0, 10), seed=1):
        during = call(unet, x, t, c)
        assert hd.installed(unet) is not None and traces(unet)
        assert "forward" not in unet.__dict__  # the UNet's own forward is never replaced
    after = call(unet, x, t, c)
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert list(unet.state_dict()) == keys and _instance_state(unet) == state
    assert traces(unet) == [] and hd.installed(unet) is None
    assert _conv_params(unet) == conv == ((2, 2), (1, 1), (1, 1))


def test_exception_inside_leaves_nothing_behind(unet):
    x, t, c = inputs(unet, *HW)
    before, state = call(unet, x, t, c), _instance_state(unet)

    def boom(module, args):
        raise RuntimeError("interrupted")

    handle = unet.mid_block.register_forward_pre_hook(boom)  # fails mid-forward, after RAD ran
    with pytest.raises(RuntimeError, match="interrupted"):
        with hd.apply_hidiffusion(unet, G(), progress=lambda: (0, 10)):
            call(unet, x, t, c)
    handle.remove()
    assert traces(unet) == [] and _instance_state(unet) == state
    assert torch.equal(call(unet, x, t, c), before)
    assert _conv_params(unet) == ((2, 2), (1, 1), (1, 1))


def test_install_is_idempotent_and_gated_off_is_vanilla(unet):
    x, t, c = inputs(unet, *HW)
    vanilla = call(unet, x, t, c)
    a = hd.install(unet)
    n_traces = len(traces(unet))
    assert hd.install(unet) is a and len(traces(unet)) == n_traces
    with hd.apply_hidiffusion(unet, S(raunet=False)):
        assert a.session.settings.raunet is False
    assert a.session is None and len(traces(unet)) == n_traces  # outer install kept
    assert torch.equal(call(unet, x, t, c), vanilla)  # installed but gated off
    assert hd.uninstall(unet) and traces(unet) == []
    assert not hd.uninstall(unet)


def test_bad_settings_patch_nothing(unet):
    with pytest.raises(hd.SettingsError):
        with hd.apply_hidiffusion(unet, S(preset="sdxl_2048")):
            pass
    assert traces(unet) == []


def test_gate_at_native_size_and_below_is_untouched(d_sd1):
    x, t, c = inputs(d_sd1, 64, 56)
    want = call(d_sd1, x, t, c)
    with hd.apply_hidiffusion(d_sd1, S(), progress=lambda: (0, 10)):
        assert torch.equal(call(d_sd1, x, t, c), want)
    with hd.apply_hidiffusion(d_sd1, G(), progress=lambda: (0, 10)):
        assert not torch.equal(call(d_sd1, x, t, c), want)


def test_sdxl_shapes_through_both_phases(d_sdxl):
    x, t, c = inputs(d_sdxl, 72, 66)
    for step in (0, 10, 30):
        with hd.apply_hidiffusion(d_sdxl, G(), progress=lambda step=step: (step, 50)):
            assert call(d_sdxl, x, t, c).shape == x.shape


def test_seeded_shifts_are_reproducible_and_leave_the_global_rng_alone(d_sd1):
    x, t, c = inputs(d_sd1, *HW)

    def run(seed):
        with hd.apply_hidiffusion(d_sd1, G(raunet=False), progress=lambda: (3, 10), seed=seed):
            return call(d_sd1, x, t, c)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run(7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(run(7), a)
    assert any(not torch.equal(run(s), a) for s in range(1, 4))


def test_sigma_time_mode_reads_the_diffusers_timestep_argument(d_sd1):
    x, _, c = inputs(d_sd1, *HW)
    inst = hd.install(d_sd1)
    seen = []
    handle = d_sd1.mid_block.register_forward_pre_hook(lambda m, a: seen.append(inst.call.rad_on))
    try:
        inst.activate(G(time_mode="sigma"), progress=lambda: (9, 10))  # the clock says "late"
        with torch.no_grad():
            for t in (999.0, 700.0):  # model-time fraction 0, 0.3 < T1 = 0.4: RAD
                d_sd1(x, torch.tensor([t]), encoder_hidden_states=c)
            d_sd1(x, timestep=500, encoder_hidden_states=c)  # keyword, plain number: 0.5 >= T1
    finally:
        handle.remove()
        hd.uninstall(d_sd1)
    assert seen == [True, True, False]


def test_bfloat16_unet_runs():
    u = tiny_diffusers("sd1", seed=7).to(torch.bfloat16)
    x, t, c = inputs(u, *HW)
    with hd.apply_hidiffusion(u, G(), progress=lambda: (0, 10)):
        out = call(u, x.bfloat16(), t, c.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out.float()).all()


# -- call conventions ------------------------------------------------------------------------------


def test_upsampler_takes_the_skip_size_positionally_or_by_keyword(d_sd1):
    up = d_sd1.up_blocks[1].upsamplers[0]
    x = torch.randn(1, up.channels, 10, 9)
    inst = hd.install(d_sd1)
    try:
        inst.activate(S(), progress=lambda: (9, 10))
        inst.call = patcher.CallPlan((80, 72), False, False, False, 0, skip_hw={5: (20, 18)})
        with torch.no_grad():
            outs = [up(x), up(x, (99, 99)), up(x, output_size=(99, 99)), up(hidden_states=x)]
            want = up.conv(torch.nn.functional.interpolate(x, size=(20, 18), mode="nearest"))
    finally:
        hd.uninstall(d_sd1)
    assert all(torch.equal(o, want) for o in outs)


def test_attn1_input_by_position_or_keyword_and_context_equal_x(d_sd1):
    attn = d_sd1.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    x, other = torch.randn(2, 24 * 20, 32), torch.randn(2, 5, 32)
    inst = hd.install(d_sd1)
    try:
        inst.activate(G(msw_shift=1), progress=lambda: (0, 10))
        inst.call = patcher.CallPlan((48, 40), False, False, True, 0, st_hw=(24, 20))
        with torch.no_grad():
            a, b = attn(x), attn(hidden_states=x)
            c = attn(x, encoder_hidden_states=x)  # self-attention written with the context = x
            cross = attn(x, encoder_hidden_states=other)  # a real context: not windowed
            masked = attn(x, attention_mask=torch.zeros(2, 1, 24 * 20))  # a mask: not windowed
        inst.call = None
        with torch.no_grad():
            plain, plain_cross = attn(x), attn(x, encoder_hidden_states=other)
            plain_masked = attn(x, attention_mask=torch.zeros(2, 1, 24 * 20))
    finally:
        hd.uninstall(d_sd1)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.allclose(a, plain)
    assert torch.equal(cross, plain_cross) and torch.equal(masked, plain_masked)


def test_block_outputs_in_any_container_are_rewrapped():
    from diffusers.models.transformers.transformer_2d import Transformer2DModelOutput

    x, y = torch.zeros(1), torch.ones(1)
    assert patcher._with_first((x, "extra"), y) == (y, "extra")
    out = patcher._with_first(Transformer2DModelOutput(sample=x), y)
    assert isinstance(out, Transformer2DModelOutput) and out.sample is y and patcher._first_tensor(out) is y


def test_downsampler_that_pads_by_itself_matches_official():
    # downsample_padding=0: Downsample2D pads (0, 1, 0, 1) itself, then runs the conv unpadded;
    # RAD keeps that padding step and, like the official code, changes the conv only.
    unet = tiny_diffusers("sd1", seed=12, downsample_padding=0)
    assert unet.down_blocks[0].downsamplers[0].padding == 0
    assert _against_official(unet, steps=(0,)) <= 1e-4


# -- attention processors, LoRA-scaled projections ----------------------------------------------------


class _KwargProcessor:
    """A processor taking its own keyword through cross_attention_kwargs (as IP-Adapter-style ones do)."""

    def __init__(self, seen):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner, self.seen = AttnProcessor2_0(), seen

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, tag=None, **kw):
        self.seen.append((tag, encoder_hidden_states is None, tuple(hidden_states.shape)))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask)


class _LoraLinear(nn.Module):
    """A LoRA-wrapped projection (base + scale * up(down(x))), like PEFT's layers."""

    def __init__(self, base: nn.Linear, rank: int = 2, scale: float = 0.7):
        super().__init__()
        self.base, self.scale = base, scale
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.normal_(self.up.weight, std=0.2)

    def forward(self, x, *args, **kwargs):
        return self.base(x) + self.scale * self.up(self.down(x))


def _with_lora(unet: nn.Module) -> nn.Module:
    torch.manual_seed(5)
    for m in list(unet.modules()):
        if type(m).__name__ == "Attention":
            m.to_q, m.to_k, m.to_v = (_LoraLinear(p) for p in (m.to_q, m.to_k, m.to_v))
            m.to_out[0] = _LoraLinear(m.to_out[0])
    return unet


def _against_official(unet, n=10, steps=(0, 5), k=2, **unet_kwargs):
    off = zoo.OfficialHiDiffusion(copy.deepcopy(unet), "sd1", steps=n)
    try:
        x, t, c = inputs(unet, *HW, seed=1)
        worst = 0.0
        for i in steps:
            with torch.no_grad():
                want = off(x, t, c, step=i, shift_k=k, **unet_kwargs)
            with hd.apply_hidiffusion(unet, G(msw_shift=k), progress=lambda i=i: (i, n)):
                got = call(unet, x, t, c, **unet_kwargs)
            worst = max(worst, ((got - want).abs().max() / want.abs().max()).item())
        return worst
    finally:
        off.remove()


def test_classic_attn_processor_matches_official():
    from diffusers.models.attention_processor import AttnProcessor

    unet = tiny_diffusers("sd1", seed=8)
    unet.set_attn_processor(AttnProcessor())
    assert _against_official(unet) <= 1e-4


def test_processor_with_its_own_keyword_matches_official_and_gets_windows():
    unet = tiny_diffusers("sd1", seed=9)
    seen = []
    unet.set_attn_processor(_KwargProcessor(seen))
    assert _against_official(unet, steps=(5,), cross_attention_kwargs={"tag": "mine"}) <= 1e-4
    seen.clear()
    x, t, c = inputs(unet, *HW)
    with hd.apply_hidiffusion(unet, G(), progress=lambda: (5, 10)):
        call(unet, x, t, c, cross_attention_kwargs={"tag": "mine"})
    self_attn = [s for s in seen if s[1]]
    assert all(tag == "mine" for tag, _, _ in seen)
    assert self_attn[0][2] == (4, 24 * 20, 32)  # 2x2 windows of the 48x40 map, batch 1 -> 4


def test_lora_scaled_projections_match_official():
    unet = _with_lora(tiny_diffusers("sd1", seed=10))
    # diffusers takes a LoRA scale from cross_attention_kwargs["scale"] (popped by the UNet forward).
    assert _against_official(unet, cross_attention_kwargs={"scale": 0.5}) <= 1e-4


# -- ControlNet ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def controlnet(d_sd1):
    return zoo.build_controlnet(d_sd1)


def _residuals(controlnet, unet, hw, batch=1):
    x, t, c = inputs(unet, *hw, batch=batch, seed=3)
    hint = torch.randn(batch, 3, 8 * hw[0], 8 * hw[1], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        down, mid = controlnet(x, t, encoder_hidden_states=c, controlnet_cond=hint, return_dict=False)
    return (x, t, c), {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid}


def test_controlnet_residuals_fit_the_reduced_skips(d_sd1, controlnet):
    (x, t, c), res = _residuals(controlnet, d_sd1, HW)
    vanilla = call(d_sd1, x, t, c, **res)
    for step, preset in ((0, "auto"), (0, "sd15_2048"), (9, "auto")):  # RAD; RAD + CA; MSW-MSA only
        with hd.apply_hidiffusion(d_sd1, G(preset=preset), progress=lambda step=step: (step, 10)):
            with_res = call(d_sd1, x, t, c, **res)
            without = call(d_sd1, x, t, c)
            zero = {
                "down_block_additional_residuals": [0 * r for r in res["down_block_additional_residuals"]],
                "mid_block_additional_residual": 0 * res["mid_block_additional_residual"],
            }
            assert torch.equal(call(d_sd1, x, t, c, **zero), without)  # zero residuals change nothing
        assert with_res.shape == x.shape and torch.isfinite(with_res).all()
        assert not torch.allclose(with_res, without) and not torch.allclose(with_res, vanilla)
    assert traces(d_sd1) == []


def test_controlnet_residuals_are_added_exactly_as_diffusers_adds_them(d_sd1, controlnet):
    (x, t, c), res = _residuals(controlnet, d_sd1, HW)
    vanilla = call(d_sd1, x, t, c, **res)
    with hd.apply_hidiffusion(d_sd1, G(raunet=False, mswmsa=False), progress=lambda: (0, 10)):
        assert torch.equal(call(d_sd1, x, t, c, **res), vanilla)  # held back, then re-added: same sums
    (x, t, c), res = _residuals(controlnet, d_sd1, (64, 56))
    vanilla = call(d_sd1, x, t, c, **res)
    with hd.apply_hidiffusion(d_sd1, S(), progress=lambda: (0, 10)):
        assert torch.equal(call(d_sd1, x, t, c, **res), vanilla)  # native size: untouched


def _skip_shapes(unet, x, t, c, settings=None) -> list[tuple[int, ...]]:
    """Shapes of the skips the up blocks receive, by input-block number."""
    per_block = []
    handles = [
        blk.register_forward_pre_hook(
            lambda m, a, kw: per_block.append([tuple(s.shape) for s in kw["res_hidden_states_tuple"]]),
            with_kwargs=True,
        )
        for blk in unet.up_blocks
    ]
    try:
        if settings is None:
            call(unet, x, t, c)
        else:
            with hd.apply_hidiffusion(unet, settings, progress=lambda: (0, 10)):
                call(unet, x, t, c)
    finally:
        for h in handles:
            h.remove()
    return [shape for block in reversed(per_block) for shape in block]  # up block 0 takes the last skips


def test_constant_residuals_at_full_or_reduced_size_agree(d_sd1):
    # A constant map stays that constant through any resize: residuals a ControlNet made at full
    # size must act as the same constants at the sizes RAU-Net leaves (RAD + CA here), each on its
    # own skip. float64, as averaging rounds (float32 rounding, amplified by a random UNet, is ~1e-5).
    unet = copy.deepcopy(d_sd1).double()
    x, t, c = (v.double() for v in inputs(unet, *HW, seed=2))
    settings = G(preset="sd15_2048")
    full, small = _skip_shapes(unet, x, t, c), _skip_shapes(unet, x, t, c, settings)
    assert full[4][-2:] == (24, 20) and small[4][-2:] == (6, 5)  # RAD 48x40 -> 12x10, CA pool -> 6x5

    def residuals(shapes):
        return {
            "down_block_additional_residuals": [
                torch.full(s, 0.1 * (i + 1), dtype=torch.float64) for i, s in enumerate(shapes)
            ],
            "mid_block_additional_residual": torch.full(shapes[-1], -0.2, dtype=torch.float64),
        }

    with hd.apply_hidiffusion(unet, settings, progress=lambda: (0, 10)):
        a = call(unet, x, t, c, **residuals(full))
        b = call(unet, x, t, c, **residuals(small))
        plain = call(unet, x, t, c)
    assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-10
    assert not torch.allclose(a, plain)


def test_controlnet_with_windows_matches_official(d_sd1, controlnet):
    # The official code leaves a bare UNet's ControlNet path alone; with RAU-Net off the two agree.
    (x, t, c), res = _residuals(controlnet, d_sd1, HW)
    off = zoo.OfficialHiDiffusion(copy.deepcopy(d_sd1), "sd1", steps=10, raunet=False)
    try:
        with torch.no_grad():
            want = off(x, t, c, step=2, shift_k=1, **res)
        with hd.apply_hidiffusion(d_sd1, G(raunet=False, msw_shift=1), progress=lambda: (2, 10)):
            got = call(d_sd1, x, t, c, **res)
    finally:
        off.remove()
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-4


def test_t2i_adapter_residuals_keep_the_sizes_with_one_warning(d_sd1, caplog):
    x, t, c = inputs(d_sd1, *HW, seed=6)
    g = torch.Generator().manual_seed(6)
    adapter = [
        torch.randn(1, ch, 48 // 2**i, 40 // 2**i, generator=g) for i, ch in enumerate((32, 64, 128, 128))
    ]
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        patcher._warned.clear()
        with hd.apply_hidiffusion(d_sd1, G(), progress=lambda: (0, 10), seed=2):
            got = call(d_sd1, x, t, c, down_intrablock_additional_residuals=[a.clone() for a in adapter])
    with hd.apply_hidiffusion(d_sd1, G(raunet=False), progress=lambda: (0, 10), seed=2):
        want = call(d_sd1, x, t, c, down_intrablock_additional_residuals=[a.clone() for a in adapter])
    assert torch.equal(got, want)
    assert sum("T2I-Adapter" in r.getMessage() for r in caplog.records) == 1
