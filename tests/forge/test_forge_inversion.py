"""The "CFG++ inversion" accordion in the fake Forge 2.x img2img (scripts/cfgpp_inversion.py).

Forge loads the UNet -- device, LoRA weights merged -- in ``sampling_prepare`` at the top of
``sample_img2img`` (dfdcbab sd_samplers_kdiffusion.py:136-147; the fake mirrors that order and
the LoRA merge, backend/memory_management.py), after ``process_before_every_sampling``. The
adapter runs the inversion from ``p.sampler_noise_scheduler_override``, which ``get_sigmas`` calls
after the load and before the start latent is built from the noise. Checked here: every inversion
call runs on the loaded model, the start latent is the closed-form reference inversion over the
sigmas the sampler uses (and those sigmas are unchanged, "discard" samplers included), round trips,
repeatability, cleanliness, messages, the infotext/API/XYZ surface, inpainting, HiDiffusion.
Host-neutral helpers: tests/inversion_checks.py (shared with tests/webui/test_inversion_glue.py).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from backend import memory_management
from backend.modules.k_model import KModel
from modules import errors, processing, prompt_parser, sd_samplers, shared

from lib_hidiff import cfgpp
from lib_hidiff.webui import generation, hosts, inversion_args, inversion_infotext, messages
from lib_hidiff.webui.hosts.base import Host
from tests.inversion_checks import clean_latent, closed_form_inversion, output, rel

from . import forge_env
from .forge_env import ClosedFormKModel, ForgeUI, closed_form_mean, forge_unet, hook_count, ldm_sd15_unet

INVERSION_SCRIPT = os.path.join(forge_env.REPO, "scripts", "cfgpp_inversion.py")
TITLE = "CFG++ inversion"
SIZE = {"width": 64, "height": 64}  # an 8×8 latent


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setattr(forge_env, "SCRIPT_FILES", [*forge_env.SCRIPT_FILES, INVERSION_SCRIPT])
    e = ForgeUI()
    e.start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def model(env):
    shared.sd_model = forge_env.hybrid_engine(None)
    return shared.sd_model


@pytest.fixture
def starts(monkeypatch):
    """(start latent, sigmas) every sampler function is handed, in order."""
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    create = sd_samplers.create_sampler

    def create_recording(name, sd_model):
        sampler = create(name, sd_model)
        func = sampler.func

        @functools.wraps(func)
        def recording(model_wrap, x, *args, **kwargs):
            sigmas = kwargs.get("sigmas")
            seen.append((x.detach().clone(), None if sigmas is None else sigmas.clone()))
            return func(model_wrap, x, *args, **kwargs)

        sampler.func = recording
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", create_recording)
    return seen


@pytest.fixture
def loaded_calls(monkeypatch):
    """For every model call: was the model loaded (Forge's sampling_prepare) when it ran?"""
    seen: list[bool] = []

    def recording(apply):
        def apply_model(self, *args, **kwargs):
            seen.append(memory_management.is_loaded(self))
            return apply(self, *args, **kwargs)

        return apply_model

    for cls in (KModel, ClosedFormKModel):
        monkeypatch.setattr(cls, "apply_model", recording(cls.apply_model))
    return seen


def inversion_args_list(env, values, hidiffusion=None):
    args = env.script_args(hidiffusion, tab="img2img")
    script = env.script(TITLE, tab="img2img")
    for i, value in enumerate(values):
        args[script.args_from + i] = value
    return args


def make(env, values, init, hidiffusion=None, **kwargs):
    kwargs = {
        **SIZE,
        "steps": 6,
        "sampler_name": "Euler CFG++",
        "cfg_scale": 7.0,
        "batch_size": init.shape[0],
        **kwargs,
    }
    return processing.StableDiffusionProcessingImg2Img(
        scripts=env.runners["img2img"],
        script_args=inversion_args_list(env, values, hidiffusion),
        init_latent=init,
        **kwargs,
    )


def run(env, values, init, hidiffusion=None, **kwargs):
    p = make(env, values, init, hidiffusion, **kwargs)
    return p, processing.process_images(p)


def reference_start(p, init, source, iterations, strength):
    """The closed-form inversion over the sigmas the sampler uses (Forge's ClosedFormKModel)."""
    steps = p.steps
    t_enc = int(min(strength, 0.999) * steps)
    sched = p.sampler.get_sigmas(p, steps)[steps - t_enc - 1 :]
    n = init.shape[0]
    m_src = closed_form_mean(prompt_parser.encode(source)[None].expand(n, -1, -1))
    m_neg = closed_form_mean(prompt_parser.encode(p.negative_prompt)[None].expand(n, -1, -1))
    lam = cfgpp.lambda_from_cfg(p.cfg_scale, "cfg/12.5")
    return closed_form_inversion(init, m_src, m_neg, sched.flip(0), lam, iterations), sched


def clean_afterwards(p):
    assert p.sampler_noise_scheduler_override is None
    assert shared.state.textinfo is None if hasattr(shared.state, "textinfo") else True
    assert generation.current() is None


# -- where it runs, and what the sampler starts from -----------------------------------------------
@pytest.mark.parametrize("sampler", ["Euler CFG++", "Euler", "DPM++ 2M", "DDIM CFG++ (k-diffusion)"])
def test_the_inverted_latent_replaces_init_plus_noise(env, model, starts, loaded_calls, sampler):
    init = clean_latent()
    p, res = run(
        env, [True, "a photo", 0, 3], init, prompt="a cat", sampler_name=sampler, denoising_strength=0.75
    )
    y, sched = reference_start(p, init, "a photo", 3, 0.75)
    assert len(starts) == 1
    assert rel(starts[0][0], y) <= 1e-5
    assert torch.equal(starts[0][1], sched)  # the sampler runs the schedule it would have run
    assert loaded_calls and all(loaded_calls)  # no model call before Forge's sampling_prepare
    assert inversion_infotext.ENABLED in res.infotexts[0]
    clean_afterwards(p)


@pytest.mark.parametrize("how", ["option", "another script's override"])
def test_the_schedule_is_the_one_without_inversion(env, model, starts, how):
    """The override hands get_sigmas what it would have built: with "Always discard next-to-last
    sigma" (get_sigmas asks for one more and drops it), and with another script's override."""
    if how == "option":
        shared.opts.data["always_discard_next_to_last_sigma"] = True
    init = clean_latent()
    custom = torch.tensor([14.0, 6.0, 3.0, 1.5, 0.7, 0.3, 0.1, 0.0])

    def other(steps):
        return custom[-(steps + 1) :]

    def go(values):
        p = make(env, values, init, denoising_strength=0.75)
        if how != "option":
            p.sampler_noise_scheduler_override = other
        res = processing.process_images(p)
        return p, res

    p0, plain = go([])
    p1, res = go([True, "a photo", 0, 2])
    assert torch.equal(starts[0][1], starts[1][1])
    y, sched = reference_start(p1, init, "a photo", 2, 0.75)
    assert torch.equal(starts[1][1], sched) and rel(starts[1][0], y) <= 1e-5
    if how == "option":
        assert "Discard penultimate sigma: True" in res.infotexts[0]
        assert p1.sampler_noise_scheduler_override is None
    else:
        assert torch.equal(sched, custom[-6:]) and p1.sampler_noise_scheduler_override is other


def test_extra_noise_is_compensated(env, model, starts):
    shared.opts.data["img2img_extra_noise"] = 0.3
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 2], init, denoising_strength=0.6)
    y, _ = reference_start(p, init, "a photo", 2, 0.6)
    assert rel(starts[0][0], y) <= 1e-5
    assert "Extra noise" in res.infotexts[0]


def test_batches_invert_each_image_once(env, model, starts):
    a, b = clean_latent(1, seed=1), clean_latent(1, seed=2)
    init = torch.cat([a, a, b])
    run(env, [True, "a photo", 0, 0], init, n_iter=2, batch_size=3)
    rows = [c["x"].shape[0] for c in model.forge_objects.unet.model.calls]
    assert rows.count(4) == 5  # 2 distinct images × (cond + uncond), 5 steps, once for both batches
    assert torch.equal(starts[0][0][0], starts[0][0][1]) and not torch.equal(starts[0][0][0], starts[0][0][2])
    assert torch.equal(starts[0][0], starts[1][0])  # armed again for the second batch, from the cache


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_round_trip_reproduces_the_init_latent(env, model, strength):
    """Prompt = source prompt, Euler CFG++, same CFG: the image comes back."""
    init = clean_latent()
    errors_ = {}
    for iterations in (0, 1, 3, 10):
        _, res = run(env, [True, "a cat", 0, iterations], init, prompt="a cat", denoising_strength=strength)
        errors_[iterations] = rel(output(res), init)
    _, plain = run(env, [], init, prompt="a cat", denoising_strength=strength)
    errors_["no inversion"] = rel(output(plain), init)
    print(
        f"\n[forge cfgpp inversion] closed form, strength {strength}: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in errors_.items())
    )
    assert errors_[10] <= 1e-5
    assert errors_[0] < 0.5 * errors_["no inversion"]


def lora_engine(scale=0.3):
    """A tiny real SD 1.5 UNet in Forge's layout with a LoRA on its output conv, merged by Forge
    only when it loads the model (sampling_prepare) -- as an applied LoRA network is."""
    engine = forge_env.unet_engine(forge_unet(ldm_sd15_unet()), "tiny")
    lora = engine.forge_objects_after_applying_lora.unet.clone()
    weight = dict(lora.model.named_parameters())["diffusion_model.out.2.weight"]
    diff = torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)) * weight.std() * scale
    assert lora.add_patches(filename="test-lora", patches={"diffusion_model.out.2.weight": diff})
    engine.forge_objects_after_applying_lora.unet = lora
    return engine


def test_round_trip_on_a_tiny_unet_with_a_lora(env, loaded_calls, monkeypatch):
    """Each run is the first generation of a freshly loaded checkpoint: the LoRA is merged only in
    sampling_prepare, so an inversion run at process_before_every_sampling (as on A1111) would
    invert another model than the one that samples -- measured at the end."""
    init = clean_latent(1)

    def round_trip(iterations=None):
        shared.sd_model = lora_engine()
        memory_management.current_loaded_models.clear()
        values = [] if iterations is None else [True, "a cat", 0, iterations]
        _, res = run(env, values, init, prompt="a cat", denoising_strength=0.5)
        return rel(output(res), init)

    errors_ = {k: round_trip(k) for k in (0, 2, 5, 20)}
    errors_["no inversion"] = round_trip()
    assert all(loaded_calls)  # every inversion call ran with the LoRA merged
    monkeypatch.setattr(type(hosts.current()), "run_inversion", Host.run_inversion)
    errors_["20, inverted before the load"] = round_trip(20)
    print(
        "\n[forge cfgpp inversion] tiny UNet + LoRA, strength 0.5, round trip by iterations: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in errors_.items())
    )
    values = [errors_[k] for k in (0, 2, 5, 20)]
    assert values == sorted(values, reverse=True) and values[-1] <= 0.1 * values[0]
    assert values[0] < 0.5 * errors_["no inversion"]
    assert errors_["20, inverted before the load"] > 5 * errors_[20]


def test_same_request_twice_is_identical_and_plain_img2img_is_untouched(env):
    shared.sd_model = forge_env.unet_engine(forge_unet(ldm_sd15_unet()), "tiny")
    unet = shared.sd_model.forge_objects.unet.model.diffusion_model
    init = clean_latent(1)
    _, before = run(env, [], init, prompt="a dog", denoising_strength=0.5)
    hooks = hook_count(unet)
    p1, first = run(env, [True, "a cat", 0, 2], init, prompt="a dog", denoising_strength=0.5)
    p2, second = run(env, [True, "a cat", 0, 2], init, prompt="a dog", denoising_strength=0.5)
    _, after = run(env, [], init, prompt="a dog", denoising_strength=0.5)
    assert torch.equal(output(first), output(second))
    assert torch.equal(output(before), output(after))
    assert not torch.equal(output(first), output(before))
    assert hook_count(unet) == hooks
    for p in (p1, p2):
        clean_afterwards(p)


# -- messages, refusals, exceptions ----------------------------------------------------------------
@pytest.mark.parametrize(
    "values, message",
    [
        (
            [True, "a photo", 0, 99],
            "CFG++ inversion argument 'iterations' must be an integer in [0, 20], got 99",
        ),
        (
            [True, "a photo", -1, 0],
            "CFG++ inversion argument 'cfg_scale' must be a number in [0, 30], got -1",
        ),
        ([{"source": "x"}], "CFG++ inversion argument 'source' is unknown"),
    ],
)
def test_bad_values_get_one_line_and_an_untouched_generation(env, model, values, message):
    init = clean_latent()
    p, res = run(env, values, init)
    _, plain = run(env, [], init)
    assert torch.equal(output(res), output(plain))
    lines = [c for c in p.comments if "CFG++ inversion" in c]
    assert len(lines) == 1 and lines[0].startswith(message)
    assert lines[0].endswith("generating without CFG++ inversion")
    assert messages.api_messages(p.extra_generation_params) == lines
    assert inversion_infotext.ENABLED not in res.infotexts[0]
    clean_afterwards(p)


class TimestepSampler:
    """What img2img touches of Forge's timestep samplers (dfdcbab sd_samplers_timesteps.py:62-122:
    no get_sigmas; the start latent √ᾱ x + √(1−ᾱ) n is built after sampling_prepare with no hook
    in between), returned as it is."""

    def __init__(self, config):
        self.config = config
        self.noise = None

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        self.noise = noise.clone()
        return x + noise


def test_timestep_samplers_get_one_line(env, model, monkeypatch):
    stub = TimestepSampler(sd_samplers.find_sampler_config("DDIM"))
    create = sd_samplers.create_sampler
    monkeypatch.setattr(
        sd_samplers, "create_sampler", lambda name, m: stub if name == "DDIM" else create(name, m)
    )
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 2], init, sampler_name="DDIM")
    noise = stub.noise
    _, plain = run(env, [], init, sampler_name="DDIM")
    assert torch.equal(noise, stub.noise) and torch.equal(output(res), output(plain))
    lines = [c for c in p.comments if "CFG++ inversion" in c]
    assert lines == [
        "CFG++ inversion on Forge needs a k-diffusion sampler (Euler CFG++, DDIM CFG++ (k-diffusion), ...); "
        "'DDIM' builds its start latent where the inversion cannot run; generating without CFG++ inversion"
    ]
    assert inversion_infotext.ENABLED not in res.infotexts[0]
    clean_afterwards(p)


def test_non_sd_models_get_one_line(env, model):
    model.is_sd1 = False  # a Flux / SD3 engine says so
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 2], init)
    _, plain = run(env, [], init)
    assert torch.equal(output(res), output(plain))
    assert [c for c in p.comments if "CFG++ inversion" in c] == [
        "CFG++ inversion covers SD 1.x, 2.x and SDXL models, not Engine; generating without CFG++ inversion"
    ]


def test_an_error_in_the_inversion_is_reported_and_sampling_goes_on(env, model, monkeypatch):
    """As Forge's script runner treats an exception in process_before_every_sampling."""
    init = clean_latent()
    _, plain = run(env, [], init)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cfgpp, "invert_cfgpp", broken)
    errors.reported.clear()
    p, res = run(env, [True, "a photo", 0, 2], init)
    assert torch.equal(output(res), output(plain))
    assert len(errors.reported) == 1 and "CFG++ inversion" in str(errors.reported[0])
    clean_afterwards(p)


def test_an_exception_in_sampling_leaves_nothing_behind(env, monkeypatch):
    unet = forge_unet(ldm_sd15_unet())
    shared.sd_model = forge_env.hybrid_engine(unet)  # HiDiffusion patches this UNet
    init = clean_latent(1)
    _, before = run(env, [], init, denoising_strength=0.5)
    hooks = hook_count(unet)
    create = sd_samplers.create_sampler

    def failing(name, m):
        sampler = create(name, m)

        def boom(*args, **kwargs):
            raise RuntimeError("sampling failed")

        sampler.func = boom
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", failing)
    p = make(env, [True, "a photo", 0, 2], init, hidiffusion=[True], denoising_strength=0.5)
    with pytest.raises(RuntimeError, match="sampling failed"):
        processing.process_images(p)
    monkeypatch.setattr(sd_samplers, "create_sampler", create)
    clean_afterwards(p)  # the override fired and was restored before sampling began
    assert hook_count(unet) == hooks
    _, after = run(env, [], init, denoising_strength=0.5)
    assert torch.equal(output(before), output(after))


# -- inpainting --------------------------------------------------------------------------------------
def test_inpainting_keeps_the_unmasked_latent(env, model):
    init = clean_latent()
    latent_mask = torch.zeros(1, 4, 8, 8)
    latent_mask[..., :4] = 1.0  # repaint the left half
    _, res = run(
        env, [True, "a photo", 0, 2], init, prompt="a cat", denoising_strength=0.8, latent_mask=latent_mask
    )
    out = output(res)
    assert torch.equal(out[..., 4:], init[..., 4:])
    assert rel(out[..., :4], init[..., :4]) > 0.01  # the edit happened where it was asked for
    _, same = run(
        env, [True, "a cat", 0, 10], init, prompt="a cat", denoising_strength=0.8, latent_mask=latent_mask
    )
    assert torch.equal(output(same)[..., 4:], init[..., 4:])
    assert rel(output(same), init) <= 1e-5


# -- arguments, infotext, API, XYZ (the shared glue, on Forge) -----------------------------------------
def test_api_dict_and_positional_args_and_infotext_round_trip(env, model):
    init = clean_latent()
    _, res1 = run(env, [{"source_prompt": "a red, fox", "iterations": 2, "cfg_scale": 5}], init)
    _, res2 = run(env, [True, "a red, fox", 5, 2], init)
    assert torch.equal(output(res1), output(res2))
    info = res1.infotexts[0]
    assert 'CFGpp inversion prompt: "a red, fox"' in info and "CFGpp inversion iterations: 2" in info
    assert "CFGpp inversion CFG scale: 5" in info and "CFGpp inversion scale: 0.4" in info
    params, values = env.paste(info, tab="img2img")
    ours = dict(zip([f.name for f in inversion_args.FIELDS], values[-len(inversion_args.FIELDS) :]))
    assert ours == {"enabled": True, "source_prompt": "a red, fox", "cfg_scale": 5.0, "iterations": 2.0}
    assert env.script(TITLE, tab="img2img").paste_field_names == list(inversion_infotext.PASTE_KEYS)
    assert '"CFGpp inversion iterations": 2' in res1.js()


def test_accordion_in_img2img_only_and_xyz_axes(env, model):
    assert env.script(TITLE, tab="img2img") is not None and env.script(TITLE, tab="txt2img") is None
    labels = [o.label for o in env.xyz().axis_options]
    for name in ("Enabled", "Iterations", "Source prompt", "CFG scale"):
        assert labels.count(f"[CFG++ inversion] {name}") == 1
    init = clean_latent()
    p = make(env, [True, "a cat", 0, 0], init, prompt="a cat")
    cells = env.xyz().run_cells(p, "[CFG++ inversion] Iterations", ["0", "10"])
    errs = [rel(output(res), init) for _, res in cells]
    assert errs[1] < 0.01 * errs[0]
    assert "CFGpp inversion iterations: 10" in cells[1][1].infotexts[0]
    for pc, _ in cells:
        clean_afterwards(pc)


# -- HiDiffusion ---------------------------------------------------------------------------------------
def test_hidiffusion_runs_in_the_inversion_on_the_sampling_clock(env, monkeypatch):
    """Every inversion call sees the step (so the HiDiffusion model) the sampling uses at its sigma."""
    shared.sd_model = forge_env.hybrid_engine(forge_unet(ldm_sd15_unet()))
    readings: list[tuple[float, object]] = []
    apply = ClosedFormKModel.apply_model

    def recording(self, x, t, *args, **kwargs):
        act = generation.current()
        readings.append((float(t[0]), None if act is None else act.progress()))
        return apply(self, x, t, *args, **kwargs)

    monkeypatch.setattr(ClosedFormKModel, "apply_model", recording)
    p, res = run(env, [True, "a photo", 0, 2], clean_latent(), hidiffusion=[True], denoising_strength=0.75)
    assert "HiDiffusion" in res.infotexts[0] and "CFGpp inversion" in res.infotexts[0]
    assert all(r is not None for _, r in readings)
    sampling = readings[-5:]  # 5 sampling steps, one call each
    assert [r for _, r in sampling] == [(j, 5) for j in range(5)]
    clock = dict(sampling)
    assert len(readings) > 5 and all(reading == clock[sigma] for sigma, reading in readings[:-5])
    clean_afterwards(p)
