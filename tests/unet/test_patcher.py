"""Installing, gating and removing HiDiffusion leaves the UNet exactly as it was."""

import pytest
import torch
import torch.nn as nn

import lib_hidiff as hd

from .helpers import call, cast_unet, inputs, tiny
from .helpers import traces as _traces

S = hd.HiDiffusionSettings


@pytest.fixture()
def unet():
    return tiny("sd1", seed=3)


def test_outputs_bit_identical_after_the_with_block(unet):
    x, t, c = inputs(unet, 80, 72)
    keys = list(unet.state_dict())
    before = call(unet, x, t, c)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (0, 10), seed=1):
        during = call(unet, x, t, c)
        assert hd.installed(unet) is not None and _traces(unet)
    after = call(unet, x, t, c)
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert list(unet.state_dict()) == keys
    assert _traces(unet) == [] and hd.installed(unet) is None
    op = unet.input_blocks[3][0].op
    assert (op.stride, op.padding, op.dilation) == ((2, 2), (1, 1), (1, 1))


def test_exception_inside_leaves_nothing_behind(unet):
    x, t, c = inputs(unet, 80, 80)
    before = call(unet, x, t, c)

    def boom(module, args):
        raise RuntimeError("interrupted")

    handle = unet.middle_block.register_forward_pre_hook(boom)  # fails mid-forward, after RAD ran
    with pytest.raises(RuntimeError, match="interrupted"):
        with hd.apply_hidiffusion(unet, S(), progress=lambda: (0, 10)):
            call(unet, x, t, c)
    handle.remove()
    assert _traces(unet) == []
    assert torch.equal(call(unet, x, t, c), before)
    op = unet.input_blocks[3][0].op
    assert (op.stride, op.padding, op.dilation) == ((2, 2), (1, 1), (1, 1))


def test_bad_settings_or_family_patch_nothing(unet):
    with pytest.raises(hd.SettingsError):
        with hd.apply_hidiffusion(unet, S(preset="sdxl_2048")):
            pass
    assert _traces(unet) == []
    with pytest.raises(hd.SettingsError):
        with hd.apply_hidiffusion(unet, S(), seed="42"):
            pass
    assert _traces(unet) == []


def test_install_is_idempotent_and_nested_apply_restores_the_outer_state(unet):
    a = hd.install(unet)
    n_traces = len(_traces(unet))
    assert hd.install(unet) is a and len(_traces(unet)) == n_traces
    x, t, c = inputs(unet, 80, 80)
    outer = S(mswmsa=False)
    a.activate(outer, progress=lambda: (0, 10))
    with hd.apply_hidiffusion(unet, S(raunet=False)):
        assert a.session.settings.raunet is False
    assert a.session.settings is outer and len(_traces(unet)) == n_traces  # outer install kept
    a.deactivate()
    vanilla_like = call(unet, x, t, c)  # installed but gated off
    assert hd.uninstall(unet) and _traces(unet) == []
    assert torch.equal(vanilla_like, call(unet, x, t, c))
    assert not hd.uninstall(unet)


def test_uninstall_all(unet):
    other = tiny("sd1", seed=4)
    hd.install(unet), hd.install(other)
    assert hd.uninstall_all() == 2
    assert _traces(unet) == [] and _traces(other) == []


def test_stale_patch_from_a_reloaded_library_is_replaced(unet):
    first = hd.install(unet)
    from lib_hidiff.unet import patcher

    del patcher._REGISTRY[unet]  # as if the library module had been re-imported
    second = hd.install(unet)
    assert second is not first and len(_traces(unet)) == len(set(_traces(unet)))
    down = unet.input_blocks[3][0]
    assert down.forward._hidiff_installation is second
    hd.uninstall(unet)
    assert _traces(unet) == []


def test_gate_at_native_size_and_below_is_untouched(sd1, sdxl):
    for unet, sizes in ((sd1, [(64, 64), (48, 80)]), (sdxl, [(128, 128)])):
        for h, w in sizes:
            x, t, c = inputs(unet, h, w)
            want = call(unet, x, t, c)
            with hd.apply_hidiffusion(unet, S(), progress=lambda: (0, 10)):
                assert torch.equal(call(unet, x, t, c), want)


def test_gate_can_be_lifted(sd1):
    x, t, c = inputs(sd1, 64, 64)
    want = call(sd1, x, t, c)
    with hd.apply_hidiffusion(sd1, S(gate=False), progress=lambda: (0, 10)):
        assert not torch.equal(call(sd1, x, t, c), want)


@pytest.mark.parametrize("hw", [(80, 80), (96, 72), (72, 104), (88, 120), (90, 65)])
def test_every_skip_concatenation_matches_in_size(sd1, hw):
    # Plain ldm concatenates with torch.cat: any size mismatch raises. Also check each output block's
    # input is exactly the concatenation of matching spatial sizes.
    x, t, c = inputs(sd1, *hw)
    seen = []
    handles = [
        blk.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
        for blk in sd1.output_blocks
    ]
    try:
        for step in (0, 9):
            seen.clear()
            with hd.apply_hidiffusion(sd1, S(), progress=lambda step=step: (step, 10)):
                out = call(sd1, x, t, c)
            assert out.shape == x.shape and len(seen) == 12
    finally:
        for h in handles:
            h.remove()


def test_sdxl_shapes_through_both_phases(sdxl):
    x, t, c = inputs(sdxl, 136, 144)
    for step in (0, 10, 30):
        with hd.apply_hidiffusion(sdxl, S(), progress=lambda step=step: (step, 50)):
            assert call(sdxl, x, t, c).shape == x.shape


def test_rad_calls_the_conv_module_so_conv_hooks_apply(unet):
    # LoRA/LoCon and fp8 casts live in Conv2d.forward: RAD must go through the module.
    op = unet.input_blocks[3][0].op
    strides = []
    handle = op.register_forward_pre_hook(lambda m, a: strides.append((m.stride, m.dilation)))
    x, t, c = inputs(unet, 80, 80)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (0, 10)):
        call(unet, x, t, c)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (9, 10)):
        call(unet, x, t, c)
    handle.remove()
    assert strides == [((4, 4), (2, 2)), ((2, 2), (1, 1))]


def test_circular_padding_of_the_tiling_option_is_kept(unet):
    for m in unet.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"
    x, t, c = inputs(unet, 80, 80)
    with hd.apply_hidiffusion(unet, S(mswmsa=False), progress=lambda: (0, 10)):
        assert call(unet, x, t, c).shape == x.shape
    op = unet.input_blocks[3][0].op
    assert op._reversed_padding_repeated_twice == [1, 1, 1, 1] or tuple(
        op._reversed_padding_repeated_twice
    ) == (1, 1, 1, 1)


def _direct_block_loop(unet, x, t, context):
    """What sd-webui-controlnet's replacement forward does: it calls the blocks itself."""
    from ldm.modules.diffusionmodules.util import timestep_embedding

    emb = unet.time_embed(timestep_embedding(t, unet.model_channels, repeat_only=False))
    hs, h = [], x
    for module in unet.input_blocks:
        h = module(h, emb, context)
        hs.append(h)
    h = unet.middle_block(h, emb, context)
    for module in unet.output_blocks:
        h = torch.cat([h, hs.pop()], dim=1)
        h = module(h, emb, context)
    return unet.out(h)


def test_controlnet_style_direct_block_calls_are_patched_too(unet):
    x, t, c = inputs(unet, 88, 80)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (1, 10), seed=5):
        want = call(unet, x, t, c)
        with torch.no_grad():
            got = _direct_block_loop(unet, x, t, c)
    assert torch.equal(got, want)


def test_controlnet_style_instance_forward_replacement_is_patched_too(unet):
    x, t, c = inputs(unet, 88, 80)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (1, 10), seed=5):
        want = call(unet, x, t, c)
        unet.forward = lambda x, timesteps=None, context=None, **kw: _direct_block_loop(
            unet, x, timesteps, context
        )
        try:
            got = call(unet, x, t, c)
        finally:
            del unet.forward
    assert torch.equal(got, want)


def test_any_attention_kernel_on_attn1(unet):
    # The WebUI (and Hypertile) replace attn1's forward; windowing wraps whatever runs.
    x, t, c = inputs(unet, 80, 80)
    with hd.apply_hidiffusion(unet, S(), progress=lambda: (5, 10), seed=2):
        want = call(unet, x, t, c)
    attn = unet.input_blocks[1][1].transformer_blocks[0].attn1
    calls = []

    def instance_kernel(x, context=None, mask=None, **kw):
        calls.append(x.shape)
        return type(attn).forward(attn, x, context=context, mask=mask)

    attn.forward = instance_kernel
    try:
        with hd.apply_hidiffusion(unet, S(), progress=lambda: (5, 10), seed=2):
            got = call(unet, x, t, c)
    finally:
        del attn.forward
    assert torch.equal(got, want)
    assert calls == [torch.Size([4, 40 * 40, 32])]  # 2x2 windows of the 128x128 map, batch 1 -> 4


def test_context_equal_x_counts_as_self_attention(unet):
    attn = unet.input_blocks[1][1].transformer_blocks[0].attn1
    x = torch.randn(2, 80 * 80, 32)
    inst = hd.install(unet)
    inst.activate(S(msw_shift=1), progress=lambda: (0, 10))
    try:
        from lib_hidiff.unet.patcher import CallPlan

        inst.call = CallPlan(
            latent_hw=(80, 80), rad_on=False, ca_on=False, msw_on=True, step_key=0, st_hw=(80, 80)
        )
        with torch.no_grad():
            a = attn(x)
            b = attn(x, context=x)
            other = torch.randn(2, 5, 32)
            cross = attn(x, context=other)  # a real context: not windowed
        inst.call = None
        with torch.no_grad():
            plain = attn(x, context=other)
            unwindowed = attn(x)
    finally:
        hd.uninstall(unet)
    assert torch.equal(a, b)
    assert torch.equal(cross, plain)
    assert not torch.allclose(a, unwindowed)


class _ValueAttention(nn.Module):
    """Test double for Forge's attn1 call, which can carry a separate ``value`` tensor."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, context=None, value=None, transformer_options=None):
        out = self.inner(x, context=context)
        return out if value is None else out + 0.0 * value.sum()


def test_a_separate_value_tensor_is_not_windowed_and_value_x_is(unet):
    from lib_hidiff.unet.patcher import CallPlan

    block = unet.input_blocks[1][1].transformer_blocks[0]
    saved = block.attn1
    block.attn1 = _ValueAttention(saved)
    x = torch.randn(2, 80 * 80, 32)
    try:
        inst = hd.install(unet)
        inst.activate(S(msw_shift=1), progress=lambda: (0, 10))
        seen = []
        spy = saved.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
        inst.call = CallPlan(
            latent_hw=(80, 80), rad_on=False, ca_on=False, msw_on=True, step_key=0, st_hw=(80, 80)
        )
        with torch.no_grad():
            block.attn1(x, context=x, value=x)  # a patch that returns (n, n, n): windowed as a whole
            block.attn1(x, context=x, value=torch.randn_like(x))  # a real value bank: left alone
        spy.remove()
    finally:
        hd.uninstall(unet)
        block.attn1 = saved
    assert seen == [8, 2]


class _SgmStyleAttention(nn.Module):
    """Test double for sgm's attn1, which takes extra keyword arguments."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen = []

    def forward(self, x, context=None, mask=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        self.seen.append((x.shape, additional_tokens, n_times_crossframe_attn_in_self))
        return self.inner(x, context=context, mask=mask)


def test_sgm_attn1_keyword_arguments_pass_through(unet):
    tb = unet.output_blocks[10][1].transformer_blocks[0]
    double = _SgmStyleAttention(tb.attn1)
    tb.attn1 = double
    original_forward = type(tb)._forward

    def sgm_forward(self, x, context=None):  # sgm's call: extra kwargs on attn1
        x = (
            self.attn1(self.norm1(x), context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0)
            + x
        )
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x

    type(tb)._forward = sgm_forward
    try:
        x, t, c = inputs(unet, 80, 80)
        with hd.apply_hidiffusion(unet, S(), progress=lambda: (0, 10)):
            out = call(unet, x, t, c)
    finally:
        type(tb)._forward = original_forward
    assert out.shape == x.shape
    assert double.seen == [(torch.Size([4, 40 * 40, 32]), None, 0)]


def test_seeded_shifts_are_reproducible_and_leave_the_global_rng_alone(unet):
    x, t, c = inputs(unet, 80, 80)

    def run(seed):
        with hd.apply_hidiffusion(unet, S(raunet=False), progress=lambda: (3, 10), seed=seed):
            return call(unet, x, t, c)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run(7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(run(7), a)
    outs = [run(s) for s in range(8)]
    assert any(not torch.equal(o, a) for o in outs)  # shifts change with the seed


def test_shift_draws_are_uniform_and_per_step_and_block():
    from lib_hidiff.unet.mswmsa import shift_for

    ks = [shift_for(1234, step, block) for step in range(200) for block in range(5)]
    counts = [ks.count(k) for k in range(4)]
    assert min(counts) > 200  # 1000 draws, 250 expected each
    assert [shift_for(1, 3, b) for b in range(5)] == [shift_for(1, 3, b) for b in range(5)]


def test_cond_and_uncond_in_separate_calls_match_one_batched_call():
    # float64 (ldm keeps GroupNorm in float32): random tiny UNets amplify float32 batch-size rounding
    # to ~1e-2; here batched vs split differs by ~1e-7, with or without HiDiffusion.
    unet = cast_unet(tiny("sd1", seed=3), torch.float64)
    x, t, c = (v.double() for v in inputs(unet, 80, 72, batch=2))
    inst = hd.install(unet)
    attn = unet.output_blocks[10][1].transformer_blocks[0].attn1
    shifts = []
    handle = attn.register_forward_pre_hook(lambda m, a: shifts.append(inst.call.windows[-1][1].shift))
    try:
        inst.activate(S(), progress=lambda: (2, 10), seed=9)
        both = call(unet, x, t, c)
        first = call(unet, x[:1], t[:1], c[:1])
        second = call(unet, x[1:], t[1:], c[1:])
    finally:
        handle.remove()
        hd.uninstall(unet)
    assert len(set(shifts)) == 1 and len(shifts) == 3
    assert torch.allclose(torch.cat([first, second]), both, rtol=0, atol=1e-5)


def test_fixed_shift_changes_the_output(unet):
    x, t, c = inputs(unet, 80, 80)
    outs = []
    for k in range(4):
        with hd.apply_hidiffusion(unet, S(raunet=False, msw_shift=k), progress=lambda: (9, 10)):
            outs.append(call(unet, x, t, c))
    assert all(not torch.allclose(outs[0], o, atol=1e-4) for o in outs[1:])


def test_parts_switch_with_the_clock(unet):
    x, t, c = inputs(unet, 80, 80)
    plans = []
    inst = hd.install(unet)
    handle = unet.middle_block.register_forward_pre_hook(
        lambda m, a: plans.append((inst.call.rad_on, inst.call.msw_on))
    )
    try:
        for clock in [(0, 10), (3, 10), (4, 10), 0.39, 0.41]:
            inst.activate(S(msw_start=0.0, msw_end=0.4), progress=lambda clock=clock: clock)
            call(unet, x, t, c)
    finally:
        handle.remove()
        hd.uninstall(unet)
    assert plans == [(True, True), (True, True), (False, False), (True, True), (False, False)]


def test_sigma_time_mode_reads_the_unet_timestep(unet):
    x, _, c = inputs(unet, 80, 80)
    inst = hd.install(unet)
    seen = []
    handle = unet.middle_block.register_forward_pre_hook(lambda m, a: seen.append(inst.call.rad_on))
    try:
        inst.activate(S(time_mode="sigma"), progress=lambda: (9, 10))  # the clock says "late"
        for t in (999.0, 700.0, 500.0):  # model-time percent 0, 0.3, 0.5 vs T1 = 0.4
            call(unet, x, torch.tensor([t]), c)
    finally:
        handle.remove()
        hd.uninstall(unet)
    assert seen == [True, True, False]


def test_registry_does_not_keep_unets_alive():
    import gc
    import weakref

    u = tiny("sd1", seed=6)
    hd.install(u)
    ref = weakref.ref(u)
    del u
    gc.collect()
    assert ref() is None


def test_bfloat16_unet_runs():
    u = cast_unet(tiny("sd1", seed=7), torch.bfloat16)
    x, t, c = inputs(u, 96, 72)
    with hd.apply_hidiffusion(u, S(), progress=lambda: (0, 10)):
        out = call(u, x.bfloat16(), t, c.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out.float()).all()
