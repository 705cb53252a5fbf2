"""CFG++ samplers in the fake SD.Next: registration, generations through lib_hidiff.diffusers'
schedulers, λ in the infotext, and the cases where SD.Next's guidance is not plain CFG."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from modules import errors, processing_diffusers, processing_helpers, sd_samplers, shared

from lib_hidiff.diffusers import cfgpp as library_cfgpp
from lib_hidiff.diffusers.scheduling import CFGppSchedulerMixin
from lib_hidiff.webui import samplers

from .sdnext_env import hook_count, shown, tiny_pipeline

OURS = ["Euler CFG++", "Euler a CFG++", "DPM++ 2M CFG++", "DDIM CFG++"]
KEYS = {
    "Euler CFG++": "euler",
    "Euler a CFG++": "euler_a",
    "DPM++ 2M CFG++": "dpmpp_2m",
    "DDIM CFG++": "ddim",
}


class SchedulerProbe:
    """What the scheduler looked like at every UNet call of a generation."""

    def __init__(self, unet):
        self.calls: list[dict] = []
        self.handle = unet.register_forward_hook(self)

    def __call__(self, module, args, output):
        s = shared.sd_model.scheduler
        ours = isinstance(s, CFGppSchedulerMixin)
        self.calls.append(
            {
                "cls": type(s).__name__,
                "scale": s.config.cfgpp_scale if ours else None,
                "capture": ours and s.cfgpp_capture is not None and s.cfgpp_capture.attached,
                "rows": output.sample.shape[0] if hasattr(output, "sample") else output[0].shape[0],
                "hr": shared.sd_model.__class__.__name__,
            }
        )

    def remove(self):
        self.handle.remove()


@pytest.fixture
def pipe(sdnext):
    return sdnext.load_model()


def _probe(pipe):
    return SchedulerProbe(pipe.unet)


def test_registered_before_same_as_primary_so_dropdown_indices_hold(sdnext):
    rows = [s.name for s in sd_samplers.samplers]
    assert rows[-1] == "Same as primary"
    assert rows[rows.index("── CFG++ ──") + 1 : rows.index("── CFG++ ──") + 5] == OURS
    dropdown = sdnext.dropdown()
    for name in OURS:  # the UI's sampler index maps back to the same name (txt2img.py:60)
        assert processing_helpers.get_sampler_name(dropdown.index(name)) == name
    assert set(OURS) <= set(sdnext.api_samplers())  # /sdapi/v1/samplers lists config keys
    schedulers = sdnext.api_schedulers()  # /sdapi/v1/schedulers rebuilds the list
    assert [n for n in schedulers if n in OURS] == OURS and schedulers[-1] == "Same as primary"
    assert samplers.registered() == OURS


def test_registration_is_idempotent_across_reloads(sdnext):
    before = (sdnext.dropdown(), sdnext.api_samplers())
    for _ in range(3):
        sdnext.reload()
    assert (sdnext.dropdown(), sdnext.api_samplers()) == before
    assert sdnext.dropdown().count("── CFG++ ──") == 1


@pytest.mark.parametrize("name", OURS)
def test_each_sampler_runs_cfgpp_and_records_lambda(sdnext, pipe, name):
    probe = _probe(pipe)
    try:
        p, res = sdnext.txt2img(sampler_name=name, steps=3)
    finally:
        probe.remove()
    cls = type(shared.sd_model.scheduler)
    assert [c["cls"] for c in probe.calls] == [cls.__name__] * 3 and issubclass(cls, CFGppSchedulerMixin)
    assert all(
        c["scale"] == pytest.approx(7.0 / 12.5) and c["capture"] and c["rows"] == 2 for c in probe.calls
    )
    assert shared.sd_model.scheduler.cfgpp_fallback_steps == 0  # every step saw its unconditional half
    info = res.infotexts[0]
    assert f"Sampler: {name}" in info and "CFGpp scale: 0.56" in info and "CFGpp scale mode: cfg/12.5" in info
    assert ("CFGpp 2M variant: A" in info) == (name == "DPM++ 2M CFG++")
    assert hook_count(pipe.unet) == 0 and shared.sd_model.scheduler.cfgpp_capture is None
    assert errors.reported == [] and not [m for m in shown() if "CFG++" in m]


def _oracle(call, base_scheduler, sampler, scale):
    """The same pipeline call through the library's own ``cfgpp(pipe, ...)`` (no SD.Next glue)."""
    pipe = call["pipe"]
    args = {k: v for k, v in call.items() if k not in ("pipe", "step") and not k.startswith("callback")}
    args["generator"] = [torch.Generator().manual_seed(int(g.initial_seed())) for g in call["generator"]]
    saved = pipe.scheduler
    pipe.scheduler = base_scheduler
    try:
        with library_cfgpp(pipe, sampler=sampler, scale=scale):
            return pipe(**args).images
    finally:
        pipe.scheduler = saved


@pytest.mark.parametrize("name", ["Euler CFG++", "Euler a CFG++"])
def test_generation_equals_the_library_on_the_same_pipeline(sdnext, pipe, name):
    p, res = sdnext.txt2img(sampler_name=name, steps=3)
    call = processing_diffusers.calls[-1]
    base = sd_samplers.create_sampler(name.replace(" CFG++", ""), pipe)  # SD.Next's own Euler / Euler a
    expected = _oracle(call, base, KEYS[name], 7.0 / 12.5)
    got = processing_diffusers.calls  # the SD.Next run's latents are decoded; decode the oracle's too
    from modules import processing_vae

    assert torch.allclose(
        torch.stack(res.images), torch.stack(processing_vae.vae_decode(expected, pipe)), atol=1e-6
    )
    assert got


@pytest.mark.parametrize("name", OURS)
def test_cfgpp_equals_its_base_sampler_when_cond_equals_uncond(sdnext, pipe, name):
    base = {
        "Euler CFG++": "Euler",
        "Euler a CFG++": "Euler a",
        "DPM++ 2M CFG++": "DPM++ 2M",
        "DDIM CFG++": "DDIM",
    }
    same = {"prompt": "a cat", "negative_prompt": "a cat", "steps": 2}
    _, ours = sdnext.txt2img(sampler_name=name, **same)
    _, theirs = sdnext.txt2img(sampler_name=base[name], **same)
    assert torch.allclose(torch.stack(ours.images), torch.stack(theirs.images), atol=1e-5)
    _, guided = sdnext.txt2img(sampler_name=name, steps=2)
    _, plain = sdnext.txt2img(sampler_name=base[name], steps=2)
    assert not torch.allclose(torch.stack(guided.images), torch.stack(plain.images), atol=1e-4)


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ({"cfg_true": 1.0}, "PAG"),
        ({"cfg_scale": 1.0}, "guidance is off"),
        ({"cfg_end": 0.5}, "CFG end 0.5"),
        ({"cfg_rescale": 0.7}, "CFG rescale 0.7"),
        ({"model_modular_enable": True}, "modular"),
    ],
)
def test_refusals_give_one_line_and_the_base_samplers_generation(sdnext, pipe, setup, why):
    setup = dict(setup)
    if setup.pop("model_modular_enable", False):
        shared.opts.data["model_modular_enable"] = True
    _, theirs = sdnext.txt2img(sampler_name="Euler", **setup)
    shown_before = len(shown())
    p, ours = sdnext.txt2img(sampler_name="Euler CFG++", **setup)
    lines = [m for m in shown()[shown_before:] if "CFG++" in m]
    assert len(lines) == 1 and why in lines[0] and "sampling with Euler instead" in lines[0]
    assert torch.equal(torch.stack(ours.images), torch.stack(theirs.images))
    assert "Sampler: Euler," in ours.infotexts[0] and "CFGpp" not in ours.infotexts[0]
    assert hook_count(pipe.unet) == 0


def test_raw_scale_mode_keeps_the_unconditional_pass(sdnext, pipe):
    shared.opts.data["cfgpp_scale_mode"] = "raw"
    probe = _probe(pipe)
    try:
        p, res = sdnext.txt2img(sampler_name="Euler CFG++", cfg_scale=0.7, steps=2)
    finally:
        probe.remove()
    assert [(c["scale"], c["rows"]) for c in probe.calls] == [(pytest.approx(0.7), 2)] * 2
    assert shared.sd_model.scheduler.cfgpp_fallback_steps == 0
    assert "guidance_scale" not in p.task_args  # the override lived for the pass only
    info = res.infotexts[0]
    assert "CFG scale: 0.7" in info and "CFGpp scale: 0.7" in info and "CFGpp scale mode: raw" in info


def test_hires_pass_uses_the_hires_lambda(sdnext, pipe):
    shared.opts.data["cfgpp_hires_scale"] = 0.3
    probe = _probe(pipe)
    try:
        p, res = sdnext.txt2img(
            sampler_name="Euler CFG++",
            steps=2,
            enable_hr=True,
            hr_scale=2,
            hr_denoising_strength=0.5,
            hr_second_pass_steps=2,
        )
    finally:
        probe.remove()
    base = [c for c in probe.calls if c["hr"] == "StableDiffusionPipeline"]
    hires = [c for c in probe.calls if c["hr"] == "StableDiffusionImg2ImgPipeline"]
    assert [c["scale"] for c in base] == [pytest.approx(0.56)] * 2
    assert hires and all(c["scale"] == pytest.approx(0.3) and c["capture"] for c in hires)
    assert "CFGpp hires scale: 0.3" in res.infotexts[0] and "Hires sampler: Euler CFG++" in res.infotexts[0]
    assert hook_count(pipe.unet) == 0


def test_an_exception_leaves_no_capture_behind(sdnext, pipe):
    def fail(module, args, output):
        if len(processing_diffusers.calls) and fail.n == 1:
            raise ZeroDivisionError("simulated")
        fail.n += 1

    fail.n = 0
    handle = pipe.unet.register_forward_hook(fail)
    try:
        with pytest.raises(ZeroDivisionError):
            sdnext.txt2img(sampler_name="Euler CFG++", steps=3)
    finally:
        handle.remove()
    assert hook_count(pipe.unet) == 0
    assert shared.sd_model.scheduler.cfgpp_capture is None


class _SigmasDefault(EulerDiscreteScheduler):
    """A default scheduler whose set_timesteps takes sigmas (diffusers >= 0.28's Euler does)."""

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None):
        return super().set_timesteps(num_inference_steps, device)


def test_sdnext_rejects_ddim_cfgpp_where_it_rejects_ddim(sdnext):
    pipe = tiny_pipeline()
    pipe.scheduler = _SigmasDefault.from_config(pipe.scheduler.config)
    sdnext.load_model(pipe)
    p, res = sdnext.txt2img(sampler_name="DDIM CFG++", steps=2)
    assert any('name="DDIM CFG++" does not accept sigmas' in m for m in shown())
    assert type(shared.sd_model.scheduler) is _SigmasDefault  # SD.Next's fallback: the default
    assert len(res.images) == 1 and errors.reported == []


def test_api_accepts_our_names_and_refuses_unknown_ones(sdnext, pipe):
    from modules.api import HTTPException

    p, res = sdnext.api_txt2img(sampler_name="euler cfg++")
    assert p.sampler_name == "Euler CFG++" and "CFGpp scale: 0.56" in res.infotexts[0]
    with pytest.raises(HTTPException) as e:
        sdnext.api_txt2img(sampler_name="Euler CFG+++")
    assert e.value.status_code == 404


def _sampler_debug_lines(caplog) -> list[tuple[str, dict]]:
    """SD.Next's debug line for each scheduler it builds (sd_samplers.py@058a7f0c:166-172): the
    sampler name and the cfgpp_* entries of the config it shows."""
    import re

    out = []
    for r in caplog.records:
        m = re.fullmatch(r'Sampler: "(.+)" class=\w+ config=(\{.*\})', r.getMessage())
        if r.name == "sd" and m:
            shown = re.findall(r"'(cfgpp_\w+)': '?([\w.]+)'?", m.group(2))
            out.append((m.group(1), {k: float(v) if k == "cfgpp_scale" else v for k, v in shown}))
    return out


def test_sdnext_builds_each_pass_scheduler_with_the_lambda_it_uses(sdnext, pipe, caplog):
    """The scheduler SD.Next constructs (and logs) for a pass already holds that pass's λ and variant:
    no stale construction value (0.6) in SD.Next's debug line."""
    caplog.set_level(logging.DEBUG, logger="sd")
    shared.opts.data["cfgpp_hires_scale"] = 0.3
    shared.opts.data["cfgpp_dpmpp_2m_variant"] = "B"
    sdnext.txt2img(
        sampler_name="DPM++ 2M CFG++",
        steps=2,
        enable_hr=True,
        hr_scale=2,
        hr_denoising_strength=0.5,
        hr_second_pass_steps=2,
    )
    built = [(n, c["cfgpp_scale"], c["cfgpp_variant"]) for n, c in _sampler_debug_lines(caplog)]
    assert built == [("DPM++ 2M CFG++", 0.56, "B"), ("DPM++ 2M CFG++", 0.3, "B")]
    caplog.clear()
    sdnext.txt2img(sampler_name="Euler CFG++", steps=2, cfg_scale=5.0)
    assert [(n, c["cfgpp_scale"]) for n, c in _sampler_debug_lines(caplog)] == [("Euler CFG++", 0.4)]
    # outside a generation (no processing object) the construction default stays
    caplog.clear()
    from modules import sd_samplers

    sd_samplers.create_sampler("Euler CFG++", pipe)
    assert [c["cfgpp_scale"] for _, c in _sampler_debug_lines(caplog)] == [0.6]
