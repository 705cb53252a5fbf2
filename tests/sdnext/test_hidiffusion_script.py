"""The real scripts/hidiffusion.py in a fake SD.Next: each sampling pass (base, hires) opens HiDiffusion
on the pipeline's diffusers UNet with the pipeline's scheduler as the clock, and closes it again.

Most tests sample at 32 px (a 16x16 latent, below the native size, so HiDiffusion's gate passes the
UNet through) and read what was active at every UNet call; one test runs it above the native size.
"""

from __future__ import annotations

import pytest
import torch
from modules import errors, hidiffusion, processing, shared

from lib_hidiff.webui import generation

from .sdnext_env import hook_count, shown


@pytest.fixture
def pipe(sdnext):
    return sdnext.load_model()


class Probe:
    """What HiDiffusion looked like at every UNet call, and at the end of every pass."""

    def __init__(self, unet, monkeypatch):
        self.unet = unet
        self.calls: list[dict | None] = []
        self.pass_ends: list[tuple[int, bool]] = []
        self.handle = unet.register_forward_hook(self._call)
        original = hidiffusion.unapply  # runs inside SD.Next's process_post, after ours

        def unapply():
            if shared.state.job != "":  # not the unapply inside apply (start of a pass)
                self.pass_ends.append((self.ours(), generation.current() is not None))
            return original()

        monkeypatch.setattr(hidiffusion, "unapply", unapply)
        orig_apply = hidiffusion.apply

        def apply(p, model_type):
            shared.state.job = ""
            try:
                return orig_apply(p, model_type)
            finally:
                shared.state.job = "pass"

        monkeypatch.setattr(hidiffusion, "apply", apply)

    def _call(self, module, args, output):
        act = generation.current()
        session = act.installation.session if act is not None else None
        self.calls.append(
            None
            if session is None
            else {
                "progress": act.progress(),
                "is_hr": act.is_hr,
                "raunet": session.settings.raunet,
                "mswmsa": session.settings.mswmsa,
                "hooks": self.ours(),
            }
        )

    def ours(self) -> int:
        return hook_count(self.unet) - (self.handle is not None)  # not counting this probe

    @property
    def active(self) -> list[bool]:
        return [c is not None for c in self.calls]

    def remove(self):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


@pytest.fixture
def probe(pipe, monkeypatch):
    probe = Probe(pipe.unet, monkeypatch)
    yield probe
    probe.remove()


def _no_patches(unet, probe=None):
    assert generation.current() is None
    assert (hook_count(unet) if probe is None else probe.ours()) == 0


def test_real_generation_above_native_size_then_the_unet_is_exactly_as_before(sdnext, pipe):
    unet = pipe.unet
    x0, t0, c0 = torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.randn(1, 7, 32)
    with torch.no_grad():
        reference = unet(x0, t0, encoder_hidden_states=c0).sample
    downsampled, attention_rows = [], []
    spies = [
        unet.down_blocks[0]
        .downsamplers[0]
        .register_forward_hook(lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))),
        unet.down_blocks[0]
        .attentions[0]
        .transformer_blocks[0]
        .attn1.to_q.register_forward_hook(lambda m, a, out: attention_rows.append(out.shape[0])),
    ]
    try:
        # 144x128 px is a 72x64 latent (this VAE halves the size): RAU-Net's downsampler takes the
        # first level to /4 (16x18, not 32x36); MSW-MSA splits each of the 2 rows into 4 windows.
        p, res = sdnext.txt2img([{"enabled": True, "t1": 1.0}], width=144, height=128, steps=1)
    finally:
        for spy in spies:
            spy.remove()
    assert downsampled == [(16, 18)] and attention_rows == [8]
    assert torch.isfinite(res.images[0]).all() and tuple(res.images[0].shape) == (3, 128, 144)
    assert "HiDiffusion: True" in res.infotexts[0] and "HiDiffusion T1: 1" in res.infotexts[0]
    assert errors.reported == [] and shown() == []
    _no_patches(unet)
    with torch.no_grad():
        assert torch.equal(unet(x0, t0, encoder_hidden_states=c0).sample, reference)


@pytest.mark.parametrize(
    ("policy", "hires_active", "hires_raunet"),
    [("off", False, None), ("MSW-MSA only", True, False), ("full", True, True)],
)
def test_each_pass_opens_and_closes_hidiffusion(sdnext, pipe, probe, policy, hires_active, hires_raunet):
    sdnext.txt2img(
        [True, "auto", True, True, False, 0.4, 0.0, 0.16, "percent", 0.0, 1.0, "nearest", "bicubic", policy],
        sampler_name="Euler",
        steps=3,
        enable_hr=True,
        hr_scale=2,
        hr_denoising_strength=0.5,
        hr_second_pass_steps=2,
    )
    base, hires = probe.calls[:3], probe.calls[3:]
    assert [c["progress"] for c in base] == [(0, 3), (1, 3), (2, 3)]  # the scheduler's clock
    assert all(not c["is_hr"] and c["raunet"] and c["hooks"] > 0 for c in base)
    assert len(hires) == 2  # 2 // 0.5 + 1 = 5 timesteps asked, strength 0.5 runs int(5 * 0.5) of them
    assert [c is not None for c in hires] == [hires_active] * 2
    if hires_active:
        assert [c["progress"] for c in hires] == [(0, 2), (1, 2)]
        assert all(c["is_hr"] and c["raunet"] is hires_raunet and c["mswmsa"] for c in hires)
    assert probe.pass_ends == [(0, False), (0, False)]  # nothing of ours at the end of each pass
    _no_patches(pipe.unet, probe)


def test_img2img_clock_counts_the_steps_the_pipeline_runs(sdnext, pipe, probe):
    sdnext.img2img([True], sampler_name="Euler", steps=4, denoising_strength=0.5)
    n = len(probe.calls)  # SD.Next asks for 4 // 0.5 + 1 = 9 timesteps; strength 0.5 runs the last 4
    assert n == 4 and [c["progress"] for c in probe.calls] == [(i, n) for i in range(n)]
    _no_patches(pipe.unet, probe)


def test_an_exception_in_sampling_leaves_no_patches(sdnext, pipe, probe):
    postprocessed = []
    sdnext.script().postprocess = lambda p, processed, *args: postprocessed.append(p)

    def fail(module, args, output):
        if len(probe.calls) == 2:
            raise ZeroDivisionError("simulated failure in the third step")

    handle = pipe.unet.register_forward_hook(fail)
    try:
        with pytest.raises(ZeroDivisionError):
            sdnext.txt2img([True], sampler_name="Euler", steps=4)
    finally:
        handle.remove()
    assert probe.active[:2] == [True, True]
    assert postprocessed == []  # SD.Next skips postprocess; process_post and after_process cleaned up
    _no_patches(pipe.unet, probe)


def test_an_interrupt_leaves_no_patches(sdnext, pipe, probe):
    def interrupt(module, args, output):
        shared.state.interrupted = True  # the user pressed Stop: SD.Next's step callback raises

    handle = pipe.unet.register_forward_hook(interrupt)
    try:
        p, res = sdnext.txt2img([True], sampler_name="Euler", steps=4)
    finally:
        handle.remove()
    assert probe.active == [True] and res.images == []
    _no_patches(pipe.unet, probe)


def test_steps_aside_when_sdnext_own_hidiffusion_is_on(sdnext, pipe, probe):
    p, res = sdnext.txt2img([True], hidiffusion=True, sampler_name="Euler", steps=2)
    assert probe.active == [False, False]
    assert hidiffusion.calls  # SD.Next's own ran
    lines = [m for m in shown() if "HiDiffusion" in m]
    assert len(lines) == 1 and "SD.Next's own HiDiffusion is on" in lines[0] and "steps aside" in lines[0]
    info = res.infotexts[0]
    assert 'HiDiffusion: "True/True/True:8"' in info and "HiDiffusion preset" not in info  # SD.Next's own
    _no_patches(pipe.unet, probe)


def test_sdnext_cleanup_between_passes_keeps_our_patches(sdnext, pipe, probe):
    # SD.Next's own unapply() walks every UNet module at the start and end of each pass, on or off.
    p = sdnext.make_txt2img([True], sampler_name="Euler", steps=2)
    original = pipe.unet.register_forward_hook(lambda m, a, o: hidiffusion.unapply())
    try:
        processing.process_images(p)
    finally:
        original.remove()
    assert probe.active == [True, True] and all(c["hooks"] > 0 for c in probe.calls)
    _no_patches(pipe.unet, probe)


def test_api_dict_and_positional_args(sdnext, pipe, probe):
    sdnext.api_txt2img(alwayson_scripts={"HiDiffusion": {"args": [{"mswmsa": False}]}}, sampler_name="Euler")
    assert probe.active == [True, True] and not probe.calls[0]["mswmsa"]
    probe.calls.clear()
    sdnext.api_txt2img(
        alwayson_scripts={"hidiffusion": {"args": [True, "auto", False]}}, sampler_name="Euler"
    )
    assert probe.active == [True, True] and not probe.calls[0]["raunet"] and probe.calls[0]["mswmsa"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([{"t1": 2}], ["'t1'", "[0, 1]"]),
        ([{"preset": "sd99"}], ["'preset'", "sd15_2048"]),
        ([{"colour": 1}], ["'colour'", "unknown"]),
        (["yes"], ["'enabled'", "true or false"]),
    ],
)
def test_bad_api_args_give_one_line_and_an_untouched_generation(sdnext, pipe, probe, args, words):
    _, plain = sdnext.api_txt2img(sampler_name="Euler")
    before = len(shown())
    p, res = sdnext.api_txt2img(alwayson_scripts={"HiDiffusion": {"args": args}}, sampler_name="Euler")
    lines = shown()[before:]
    assert len(lines) == 1 and all(w in lines[0] for w in words) and "without HiDiffusion" in lines[0]
    assert not any(probe.active)
    assert torch.equal(torch.stack(res.images), torch.stack(plain.images))
    assert "HiDiffusion" not in res.infotexts[0]
    _no_patches(pipe.unet, probe)


def test_detailer_passes_run_without_our_hidiffusion(sdnext, pipe, probe):
    p = sdnext.make_txt2img([True], sampler_name="Euler", steps=2)
    p.ops.append("detailer")  # SD.Next's detailer marks its inpainting passes so (detailer.py:225)
    processing.process_images(p)
    assert probe.active == [False, False]
    _no_patches(pipe.unet, probe)


def _xyz():
    from modules import scripts_manager

    return next(d.module for d in scripts_manager.scripts_data if d.module.__name__ == "xyz_grid.py")


def test_xyz_axes_are_added_once_beside_sdnext_own_hidiffusion_axes(sdnext, pipe):
    labels = [o.label for o in _xyz().axis_options if "HiDiffusion" in o.label]
    # "[HiDiffusion] T1" / "T2" are SD.Next's own settings' axes: all of ours say "extension"
    ours = {
        "[HiDiffusion extension] Enabled",
        "[HiDiffusion extension] Preset",
        "[HiDiffusion extension] RAU-Net",
        "[HiDiffusion extension] MSW-MSA",
        "[HiDiffusion extension] T1",
        "[HiDiffusion extension] T2",
    }
    assert ours <= set(labels) and {"[HiDiffusion] T1", "[HiDiffusion] T2"} <= set(labels)
    assert not {label for label in labels if label.startswith("[HiDiffusion] ")} - {
        "[HiDiffusion] T1",
        "[HiDiffusion] T2",
        "[HiDiffusion] Aggression step",
    }
    assert len(labels) == 9
    sdnext.reload()
    assert [o.label for o in _xyz().axis_options if "HiDiffusion" in o.label] == labels
    by_label = {o.label: o for o in _xyz().axis_options}
    assert by_label["[HiDiffusion extension] Enabled"].choices() == ["True", "False"]
    with pytest.raises(ValueError, match="T1"):
        by_label["[HiDiffusion extension] T1"].confirm(None, [0.5, 1.5])
    # a cell as SD.Next's XYZ makes it (copy(p), the axis applied to the copy) sets our T1
    p = sdnext.make_txt2img([True], sampler_name="Euler", steps=2)
    by_label["[HiDiffusion extension] T1"].apply(p, 0.25, [0.25])
    processing.process_images(p)
    assert "HiDiffusion T1: 0.25" in processing.create_infotext(p)
