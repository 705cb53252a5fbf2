"""The real scripts/hidiffusion.py in a fake WebUI: process -> sampling -> postprocess.

Most tests use HybridModel (a closed-form denoiser carrying a real tiny UNet it never calls): the
glue installs and gates HiDiffusion on that UNet exactly as in a real generation, and a probe on
``on_cfg_denoised`` records what was active at every CFG denoiser call. One test runs the real UNet.
"""

from __future__ import annotations

import pytest
import torch
from modules import errors, script_callbacks, scripts, sd_models, sd_unet, shared

import lib_hidiff.unet as hd
from lib_hidiff.webui import generation

from .webui_env import HybridModel, TinyLatentDiffusion, WebUI, hook_count, tiny_sd15_unet, tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_sd15_unet()


@pytest.fixture
def model(webui, unet):
    shared.sd_model = HybridModel(unet, "base")
    return shared.sd_model


class Probe:
    """What HiDiffusion looked like at each CFG denoiser call (after its clock callback ran)."""

    def __init__(self):
        self.calls: list[dict | None] = []
        script_callbacks.on_cfg_denoised(self)

    def __call__(self, params):
        act = generation.current()
        session = act.installation.session if act is not None else None
        self.calls.append(
            None
            if session is None
            else {
                "progress": act.progress(),
                "is_hr": act.is_hr,
                "settings": session.settings,
                "seed": session.seed,
            }
        )

    @property
    def active(self):
        return [c is not None for c in self.calls]


def _no_patches(unet):
    assert generation.current() is None
    assert hd.installed(unet) is None
    assert hook_count(unet) == 0


# -- a real generation --------------------------------------------------------------------------
def test_real_unet_generation_applies_hidiffusion_then_leaves_the_unet_exactly_as_before(webui, unet):
    shared.sd_model = TinyLatentDiffusion(unet, "base")
    x0, t0, c0 = torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.randn(1, 7, 32)
    with torch.no_grad():
        reference = unet(x0, t0, context=c0)
    downsampled, attention_rows = [], []
    spies = [
        unet.input_blocks[3].register_forward_hook(
            lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))
        ),
        unet.input_blocks[1][1]
        .transformer_blocks[0]
        .attn1.to_q.register_forward_hook(lambda m, a, out: attention_rows.append(out.shape[0])),
    ]
    try:
        p, res = webui.txt2img([{"enabled": True, "t1": 1.0}], steps=1, seed=7)
    finally:
        for spy in spies:
            spy.remove()
    # 576x512 px is a 72x64 latent: RAU-Net's downsampler takes level 1 to /4 (16x18, not 32x36);
    # MSW-MSA splits each of the 2 rows (cond, uncond) into 4 windows.
    assert downsampled == [(16, 18)]
    assert attention_rows == [8]
    assert torch.isfinite(res.images[0]).all()
    assert "HiDiffusion: True" in res.infotexts[0] and "HiDiffusion T1: 1" in res.infotexts[0]
    assert errors.reported == []
    _no_patches(unet)
    with torch.no_grad():
        assert torch.equal(unet(x0, t0, context=c0), reference)


def test_real_unet_schedule_follows_the_sampler_when_cond_and_uncond_run_separately(webui, unet):
    # Counting UNet calls would see 4 "steps" here; the sampler's clock sees 2, so RAU-Net
    # (T1 = 0.5 of 2 steps: step 0 only) covers both calls of step 0 and neither of step 1.
    shared.sd_model = TinyLatentDiffusion(unet, "base")
    shared.opts.data["batch_cond_uncond"] = False
    downsampled = []
    spy = unet.input_blocks[3].register_forward_hook(
        lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))
    )
    try:
        webui.txt2img([{"enabled": True, "t1": 0.5}], steps=2, seed=7)
    finally:
        spy.remove()
    assert downsampled == [(16, 18), (16, 18), (32, 36), (32, 36)]
    _no_patches(unet)


def test_exception_inside_sampling_leaves_no_patches(webui, model, unet):
    probe = Probe()
    postprocessed = []
    webui.script().postprocess = lambda p, processed, *args: postprocessed.append(p)

    def out_of_memory(module, args, output):
        if len(probe.calls) == 2:  # the model fails in the third step
            raise RuntimeError("CUDA out of memory (simulated)")

    model.denoiser.register_forward_hook(out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        webui.txt2img([True], steps=4)
    assert probe.active[:2] == [True, True]
    assert postprocessed == []  # the WebUI skips postprocess on an exception...
    _no_patches(unet)  # ...and the finally around p.sample took everything off


def test_clock_is_the_cfg_denoiser_step_and_seed_is_the_image_seed(webui, model):
    probe = Probe()
    webui.txt2img([True], steps=4, seed=1234, batch_size=1, n_iter=2)
    progress = [c["progress"] for c in probe.calls]
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4)] * 2
    assert [c["seed"] for c in probe.calls] == [1234] * 4 + [1235] * 4


def test_clock_counts_model_calls_of_second_order_samplers(webui, model):
    probe = Probe()
    webui.txt2img([True], steps=3, sampler_name="DPM++ 2S a CFG++")
    progress = [c["progress"] for c in probe.calls]
    assert {total for _, total in progress} == {6}
    assert [step for step, _ in progress] == list(range(len(progress)))


def test_img2img_clock_follows_the_truncated_schedule(webui, model):
    probe = Probe()
    init = torch.zeros(1, 4, 64, 72)
    webui.img2img([True], steps=4, denoising_strength=0.5, init_latent=init)
    assert [c["progress"] for c in probe.calls] == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize(
    ("policy", "hires_active", "hires_raunet"),
    [("off", False, None), ("MSW-MSA only", True, False), ("full", True, True)],
)
def test_hires_pass_policy(webui, model, policy, hires_active, hires_raunet):
    probe = Probe()
    p, res = webui.txt2img(
        [{"enabled": True, "hires": policy}],
        steps=2,
        enable_hr=True,
        hr_scale=1.5,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
    )
    first, hires = probe.calls[:2], probe.calls[2:]
    assert all(c is not None and not c["is_hr"] and c["settings"].raunet for c in first)
    assert len(hires) == 2 and all((c is not None) == hires_active for c in hires)
    if hires_active:
        assert all(c["is_hr"] and c["settings"].raunet is hires_raunet for c in hires)
    assert f"HiDiffusion hires: {policy}" in res.infotexts[0]


def test_webui_before_1_10_activates_from_process_batch_and_before_hr(monkeypatch, unet):
    monkeypatch.delattr(scripts.Script, "process_before_every_sampling")
    env = WebUI()
    env.start()
    shared.sd_model = HybridModel(unet, "base")
    try:
        probe = Probe()
        env.txt2img(
            [{"enabled": True, "hires": "full"}],
            steps=2,
            enable_hr=True,
            hr_scale=1.5,
            hr_second_pass_steps=2,
            denoising_strength=0.5,
        )
        assert [c and c["is_hr"] for c in probe.calls] == [False, False, True, True]
    finally:
        env.stop()


# -- XYZ, API ----------------------------------------------------------------------------------
def test_xyz_cells_do_not_leak(webui, model):
    probe = Probe()
    xyz = webui.xyz()
    p = webui.make_txt2img([False], steps=2)
    cells = xyz.run_cells(p, "[HiDiffusion] Enabled", ["True", "False", "True"])
    texts = [res.infotexts[0] for _, res in cells]
    assert ["HiDiffusion: True" in t for t in texts] == [True, False, True]
    assert probe.active == [True, True, False, False, True, True]
    assert not hasattr(p, "hidiff_enabled")  # the axis only touched the cells' copies
    # The cells share one extra_generation_params dict, as in the WebUI; the last cell's keys only.
    assert p.extra_generation_params["HiDiffusion"] is True

    probe.calls.clear()
    cells = xyz.run_cells(webui.make_txt2img([True], steps=2), "[HiDiffusion] T1", ["0.2", "0.6"])
    assert [c["settings"].t1 for c in probe.calls] == [0.2, 0.2, 0.6, 0.6]
    assert (
        "HiDiffusion T1: 0.2" in cells[0][1].infotexts[0]
        and "HiDiffusion T1: 0.6" in cells[1][1].infotexts[0]
    )


def test_xyz_axes_are_added_once_and_check_their_values(webui):
    xyz = webui.xyz()
    labels = [o.label for o in xyz.axis_options if o.label.startswith("[HiDiffusion]")]
    assert labels == [
        "[HiDiffusion] Enabled",
        "[HiDiffusion] Preset",
        "[HiDiffusion] RAU-Net",
        "[HiDiffusion] MSW-MSA",
        "[HiDiffusion] T1",
        "[HiDiffusion] T2",
    ]
    webui.reload()
    assert [o.label for o in webui.xyz().axis_options].count("[HiDiffusion] T1") == 1
    p = webui.make_txt2img([True])
    with pytest.raises(ValueError, match="out of range"):
        webui.xyz().run_cells(p, "[HiDiffusion] T1", ["1.5"])
    with pytest.raises(ValueError, match="sd15_1024"):
        webui.xyz().run_cells(p, "[HiDiffusion] Preset", ["sd15_4096"])


def test_api_positional_and_dict_args(webui, model):
    probe = Probe()
    webui.txt2img([True, "sd15_2048", False, True], steps=2)
    webui.txt2img([{"enabled": True, "preset": "sd15_1024", "t2": 0.5, "time_mode": "sigma"}], steps=2)
    s1, s2 = probe.calls[0]["settings"], probe.calls[2]["settings"]
    assert (s1.preset, s1.raunet, s1.mswmsa) == ("sd15_2048", False, True)
    assert (s2.preset, s2.t2, s2.t1, s2.time_mode) == ("sd15_1024", 0.5, 0.4, "sigma")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([{"enabled": True, "t1": 2}], "HiDiffusion argument 't1' must be a number in [0, 1], got 2"),
        ([{"enabled": True, "preset": "big"}], "HiDiffusion argument 'preset' must be one of"),
        ([True, "auto", "maybe"], "HiDiffusion argument 'raunet' must be true or false, got 'maybe'"),
        ([{"enabled": True, "preset": "sdxl_2048"}], "'sdxl_2048' is for SDXL models"),
    ],
)
def test_bad_api_args_give_one_clear_error_and_an_untouched_generation(webui, model, unet, args, message):
    probe = Probe()
    p, res = webui.txt2img(args, steps=2)
    assert probe.active == [False, False]
    assert "HiDiffusion" not in res.infotexts[0]
    assert len(res.comments.strip().splitlines()) == 1 and message in res.comments
    assert errors.reported == []  # handled: no traceback report
    _no_patches(unet)


# -- models, refiner, conflicts ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["sd1", "other"])
def test_refiner_steps_run_untouched(webui, model, unet, arch):
    refiner = HybridModel(unet if arch == "sd1" else tiny_unet("sdxl"), "refiner", arch=arch)
    sd_models.available.update({"base": model, "refiner": refiner})
    probe = Probe()
    webui.txt2img([True], steps=4, refiner_checkpoint_info=refiner.sd_checkpoint_info, refiner_switch_at=0.5)
    assert probe.active == [True, True, False, False]
    assert shared.sd_model.sd_checkpoint_info.name == "refiner"
    _no_patches(unet)


def test_model_switch_reinspects(webui, model, unet):
    seen = []
    script_callbacks.on_cfg_denoised(
        lambda params: seen.append(generation.current().installation.layout.family)
    )
    webui.txt2img([True], steps=2)
    xl_unet = tiny_unet("sdxl")
    shared.sd_model = HybridModel(xl_unet, "xl", arch="sdxl")
    webui.txt2img([True], steps=2, width=1088, height=1024)
    assert seen == ["sd1", "sd1", "sdxl", "sdxl"]
    _no_patches(unet)
    _no_patches(xl_unet)


def test_hires_checkpoint_switch_activates_on_the_new_unet(webui, model, unet):
    xl_unet = tiny_unet("sdxl")
    xl = HybridModel(xl_unet, "xl", arch="sdxl")
    sd_models.available.update({"base": model, "xl": xl})
    seen = []
    script_callbacks.on_cfg_denoised(
        lambda params: seen.append(generation.current() and generation.current().installation.layout.family)
    )
    webui.txt2img(
        [{"enabled": True, "hires": "full"}],
        steps=2,
        enable_hr=True,
        hr_scale=2.0,
        hr_checkpoint_info=xl.sd_checkpoint_info,
        hr_second_pass_steps=2,
    )
    assert seen == ["sd1", "sd1", "sdxl", "sdxl"]
    _no_patches(unet)
    _no_patches(xl_unet)


def test_unsupported_layout_warns_and_generates_untouched(webui):
    shared.sd_model = HybridModel(tiny_unet("refiner"), "refiner-layout", arch="refiner")
    probe = Probe()
    _, res = webui.txt2img([True], steps=2)
    assert probe.active == [False, False]
    assert "HiDiffusion" not in res.infotexts[0]
    assert "SDXL refiner layout" in res.comments and "generating without HiDiffusion" in res.comments


def test_sd3_and_replacement_unets_are_left_alone(webui, model, unet):
    probe = Probe()
    model.is_sd3 = True
    _, res = webui.txt2img([True], steps=2)
    assert "SD3" in res.comments and "HiDiffusion" not in res.infotexts[0]
    model.is_sd3 = False

    class TensorRTUnet:
        option = type("Option", (), {"label": "[TRT] tiny"})()

    sd_unet.current_unet = TensorRTUnet()
    _, res = webui.txt2img([True], steps=2)
    assert "[TRT] tiny" in res.comments and "HiDiffusion" not in res.infotexts[0]
    sd_unet.current_unet = None
    assert probe.active == [False] * 4
    _no_patches(unet)


@pytest.mark.parametrize("conflict", ["hypertile", "tome"])
def test_hypertile_and_token_merging_turn_mswmsa_off_with_one_message(webui, model, conflict):
    probe = Probe()
    kwargs = {}
    if conflict == "hypertile":
        shared.opts.data["hypertile_enable_unet"] = True
    else:
        kwargs["token_merging_ratio"] = 0.5
    _, res = webui.txt2img([True], steps=3, **kwargs)
    assert all(c["settings"].mswmsa is False and c["settings"].raunet for c in probe.calls)
    assert "HiDiffusion MSW-MSA: False" in res.infotexts[0]
    assert len(res.comments.strip().splitlines()) == 1
    assert ("Hypertile" if conflict == "hypertile" else "token merging") in res.comments


def test_sd2_v_models_are_native_at_768(webui, unet):
    sd2 = tiny_unet("sd2")
    model = HybridModel(sd2, "sd21-768-v", arch="sd2")
    model.parameterization = "v"
    shared.sd_model = model
    seen = []
    script_callbacks.on_cfg_denoised(lambda params: seen.append(generation.current().installation.layout))
    webui.txt2img([True], steps=1, width=1024, height=1024)
    assert seen[0].family == "sd2" and seen[0].native == (96, 96)


# -- Reload UI, paste ----------------------------------------------------------------------------
def test_reload_ui_neither_stacks_nor_loses_callbacks(webui, model, unet):
    def counts():
        return {k: len(v) for k, v in script_callbacks.callback_map.items()}

    before = counts()
    generation_before = len(webui.runners["txt2img"].alwayson_scripts)
    hd.install(unet)  # something left installed when the user reloads
    webui.reload()
    assert hd.installed(unet) is None  # unloading took it off
    assert counts() == before
    assert len(webui.runners["txt2img"].alwayson_scripts) == generation_before
    probe = Probe()
    webui.txt2img([True], steps=2)
    assert probe.active == [True, True]
    _no_patches(unet)


def test_infotext_paste_restores_every_field(webui, model):
    args = [
        True,
        "sd15_2048",
        False,
        True,
        True,
        0.35,
        0.2,
        0.1,
        "sigma",
        0.1,
        0.8,
        "bilinear",
        "area",
        "MSW-MSA only",
    ]
    _, res = webui.txt2img(
        args, steps=2, enable_hr=True, hr_scale=1.25, hr_second_pass_steps=1, denoising_strength=0.3
    )
    _, values = webui.paste(res.infotexts[0])
    script = webui.script()
    mine = values[: script.args_to - script.args_from]
    assert mine == args

    _, plain = webui.txt2img([False], steps=2)
    _, values = webui.paste(plain.infotexts[0])
    assert values[0] is False and all(v is None for v in values[1:14])
