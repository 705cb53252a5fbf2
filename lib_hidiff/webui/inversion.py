"""CFG++ inversion in img2img: the init image's latent, inverted with a source prompt, replaces
init + random noise; then the normal img2img sampling runs with the user's prompt.

Lifecycle (the "CFG++ inversion" script, scripts/cfgpp_inversion.py):

* ``process``: parse and validate the arguments (UI, API, XYZ ``p.cfgpp_inversion_*``), record them in
  the infotext. A bad value or a generation the inversion cannot serve gets one line
  (messages.note) and the generation runs untouched.
* ``before_sampling`` (``process_before_every_sampling``, which A1111 1.10 runs in img2img after
  drawing the noise and right before ``sampler.sample_img2img``): the host adapter may refuse
  (``Host.inversion_blocking``) and decides when the rest runs (``Host.run_inversion``: A1111 at
  once; Forge from inside ``sample_img2img``, once its model is loaded, before the noise is used).
  Then: build the sigmas the sampler is about to use (its own ``get_sigmas`` / ``get_timesteps`` on
  the same steps), invert ``p.init_latent`` from 0 up to the starting sigma with
  ``cfgpp.invert_cfgpp``, and overwrite the noise tensor in place with
  n = (y − init) / (σ_start + extra noise), so that the WebUI's own xi = init + n·σ_start
  (+ n·extra; VP samplers: the same times √ᾱ) is the inverted latent y.

SD.Next has no per-pass script hook and samples with diffusers pipelines: its adapter runs the same
inversion inside the img2img pass (hosts/sdnext_inversion.py, through lib_hidiff.diffusers); only
``process`` (arguments, infotext) is shared with it.

The model is the WebUI's CFG denoiser in the CFG++ form of the host adapter (it exposes the
unconditional x0), set up as the sampler's will be (mask, init latent, image conditioning), with
the source prompt as cond, the negative prompt as uncond and λ from the inversion's CFG scale
(0 = the generation's) through the samplers' scale mode. Each model call is shown the step clock of
the sampling step it undoes, so prompt editing, "skip early CFG" and HiDiffusion see the same step at
the same sigma as during sampling. HiDiffusion, when on, is used by the inversion: the sampling
runs the HiDiffusion UNet, and an inverse of a different model would not reproduce the image.

A batch inverts each distinct init latent once (rows with the same latent, image conditioning and
negative prompt share one inversion), and the results are reused across batch counts. Progress:
``shared.state`` counts the inversion steps (with "CFG++ inversion" as its text; the CFG denoiser
updates the live preview as in sampling), then the sampling resets it as usual. With refinement
iterations the count covers every phase of ``invert_cfgpp`` (plain chain, refined chain, and the two
round trips that pick, per image, the refined latent only where it retraces the image better): 4×
the inversion steps. Each call, the round trips' included, is shown the step clock of its sigma.
The exact round trip holds for Euler CFG++ (no churn) with the same λ, the prompt equal to the
source prompt and no extra noise; other samplers start from the same latent without that promise.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from typing import Any

import torch

from lib_hidiff import cfgpp

from . import generation, hosts, inversion_infotext, samplers
from .args import ArgsError
from .inversion_args import OWNER, InversionArgs, parse, xyz_overrides
from .messages import note

__all__ = ["P_ARGS", "before_sampling", "process", "prompt_from_image", "supported"]

log = logging.getLogger("hidiffusion")

P_ARGS = "_cfgpp_inversion"  # the parsed InversionArgs of this generation (None = off)
P_CACHE = "_cfgpp_inversion_cache"  # inverted latent rows of this generation, by content


EXTRA_NETWORK = re.compile(r"<\w+:[^>]+>")  # <lora:name:1>: the prompt syntax A1111's extra networks parse


class _Skip(Exception):
    """The inversion cannot run for this generation; the message says why (one line)."""


def supported() -> str | None:
    """Why the inversion is off on this WebUI, or None."""
    host = hosts.current()
    if not host.cfgpp_inversion:
        return f"{OWNER} is not available on {host.label}"
    return None


# -- process ------------------------------------------------------------------------------------
def process(p: Any, args: Any) -> InversionArgs | None:
    """Start of a generation (and of every XYZ cell): validate, record."""
    setattr(p, P_ARGS, None)
    setattr(p, P_CACHE, {})
    inversion_infotext.remove(p.extra_generation_params)
    try:
        parsed = parse(args, xyz_overrides(p))
    except ArgsError as e:
        note(p, f"{e}; generating without {OWNER}")
        return None
    if not parsed.enabled:
        return parsed
    reason = supported() or _blocking(p)
    if reason is not None:
        note(p, f"{reason}; generating without it")
        return None
    setattr(p, P_ARGS, parsed)
    inversion_infotext.write(p.extra_generation_params, parsed)
    return parsed


def _blocking(p: Any) -> str | None:
    if not hosts.current().inversion_job(p):
        return f"{OWNER} works in img2img only"
    if getattr(p, "refiner_checkpoint_info", None) is not None:
        return f"{OWNER} does not run with a refiner (the inversion would switch models halfway)"
    return None


# -- sampling -----------------------------------------------------------------------------------
def before_sampling(p: Any, noise: torch.Tensor | None, uncond: Any = None) -> torch.Tensor | None:
    """Invert ``p.init_latent`` and make ``noise`` (the tensor the sampler will use) lead to it.

    The host runs the inversion where its sampler's model is ready and the img2img schedule is
    about to be built (``Host.run_inversion``: A1111 at once; Forge inside ``sample_img2img``).
    Returns the inverted latents (one row per image) when it ran now, else None.
    """
    a: InversionArgs | None = getattr(p, P_ARGS, None)
    if a is None or noise is None:
        return None
    host = hosts.current()
    reason = host.inversion_blocking(p)
    if reason is not None:
        _skipped(p, reason)
        return None
    return host.run_inversion(p, lambda: _invert_into(p, a, noise, uncond))


def _skipped(p: Any, reason: str) -> None:
    note(p, f"{reason}; generating without {OWNER}")
    inversion_infotext.remove(p.extra_generation_params)


def _invert_into(p: Any, a: InversionArgs, noise: torch.Tensor, uncond: Any) -> torch.Tensor | None:
    try:
        plan = _plan(p)
        y = _invert_rows(p, a, plan, p.uc if uncond is None else uncond)
    except _Skip as e:
        _skipped(p, str(e))
        return None
    if y is None:  # interrupted: the sampling stops at its first step anyway
        return None
    init = p.init_latent
    # in float32: A1111 may hold init_latent in float16, the noise (and so xi) is float32
    replacement = (y.float() - init.float()) / (plan.sigma_start + plan.extra)
    noise.copy_(replacement.to(noise))
    return y


class _Plan:
    """The sigmas of the coming img2img sampling and how the WebUI will build its start latent."""

    def __init__(self, ascending: torch.Tensor, sigma_start: float, extra: float, steps: int, total: int):
        self.ascending = ascending  # from 0 up to the starting sigma
        self.sigma_start = sigma_start
        self.extra = extra  # opts.img2img_extra_noise: the WebUI adds noise·extra on top
        self.steps = steps  # sampling steps of the pass (the CFG denoiser's ``steps``)
        self.total = total  # the CFG denoiser's ``total_steps`` (second-order samplers: 2×)
        sched = ascending.flip(0)[:-1]  # the sigmas the sampler evaluates, in its order
        self.step_of_sigma = {float(s): j for j, s in enumerate(sched)}


def _plan(p: Any) -> _Plan:
    from modules import sd_samplers_common, shared

    sampler = p.sampler
    if sampler is None:
        raise _Skip(f"{OWNER}: no sampler")
    if hasattr(shared.sd_model, "add_noise_to_latent"):
        raise _Skip(f"{OWNER}: this model adds noise its own way (flow matching), which CFG++ does not cover")
    steps, t_enc = sd_samplers_common.setup_img2img_steps(p)
    if hasattr(sampler, "get_sigmas"):  # k-diffusion: sigma_sched as in KDiffusionSampler.sample_img2img
        sigmas = torch.as_tensor(sampler.get_sigmas(p, steps)).detach().float().cpu()
        ascending = sigmas[steps - t_enc - 1 :].flip(0)
    elif hasattr(sampler, "get_timesteps"):  # timestep samplers noise to timesteps[t_enc] (VP)
        timesteps = torch.as_tensor(sampler.get_timesteps(p, steps)).long().cpu()[: t_enc + 1]
        ac = shared.sd_model.alphas_cumprod.detach().double().cpu()[timesteps]
        ascending = torch.cat([torch.zeros(1, dtype=torch.float64), ((1 - ac) / ac).sqrt()]).float()
    else:
        raise _Skip(f"{OWNER}: sampler {p.sampler_name!r} has no sigma schedule to invert over")
    if len(ascending) < 2 or float(ascending[0]) != 0.0 or bool((ascending[1:] <= 0).any()):
        raise _Skip(f"{OWNER}: the img2img schedule ({len(ascending) - 1} steps) has nothing to invert")
    config = getattr(sampler, "config", None)
    n = t_enc + 1
    total = config.total_steps(n) if config is not None else n
    extra = float(getattr(shared.opts, "img2img_extra_noise", 0.0) or 0.0)
    return _Plan(ascending, float(ascending[-1]), extra, n, total)


def _row_key(*parts: Any) -> str:
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().float().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


def _lambda(p: Any, a: InversionArgs) -> float:
    lam, _ = samplers.lambda_for(p, a.cfg_scale or float(p.cfg_scale))
    return lam


def _invert_rows(p: Any, a: InversionArgs, plan: _Plan, uncond: Any) -> torch.Tensor | None:
    """Invert each distinct row of ``p.init_latent`` once per generation; rows in batch order."""
    init = p.init_latent
    image_cond = getattr(p, "image_conditioning", None)
    if image_cond is None:
        raise _Skip(f"{OWNER}: the img2img job has no image conditioning")
    negatives = list(getattr(p, "negative_prompts", None) or [p.negative_prompt] * init.shape[0])
    lam = _lambda(p, a)
    settings = (a.source_prompt, lam, a.iterations, tuple(plan.ascending.tolist()))
    keys = [
        _row_key(
            init[i], image_cond[i] if image_cond.shape[0] == init.shape[0] else None, negatives[i], settings
        )
        for i in range(init.shape[0])
    ]
    cache: dict[str, torch.Tensor] = getattr(p, P_CACHE, None)
    if cache is None:
        cache = {}
        setattr(p, P_CACHE, cache)
    todo = [keys.index(k) for k in dict.fromkeys(keys) if k not in cache]
    if todo:
        y = _run(p, a, plan, lam, todo, uncond, image_cond)
        if y is None:
            return None
        for row, i in enumerate(todo):
            cache[keys[i]] = y[row : row + 1]
    p.extra_generation_params[inversion_infotext.LAMBDA] = round(lam, 4)
    return torch.cat([cache[k] for k in keys])


def _subset(value: Any, rows: list[int], batch: int) -> Any:
    """Rows of a per-image tensor or list; anything else (a shared mask, None) as it is."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == batch and value.ndim == 4 else value
    if isinstance(value, list) and len(value) == batch:
        return [value[i] for i in rows]
    return value


class _ClockedModel:
    """The CFG++ denoiser, each call shown the sampling step of its sigma (the step it undoes)."""

    def __init__(self, denoiser: Any, plan: _Plan):
        self.denoiser = denoiser
        self.plan = plan

    @property
    def last_denoised_uncond(self) -> Any:
        return self.denoiser.last_denoised_uncond

    @last_denoised_uncond.setter
    def last_denoised_uncond(self, value: Any) -> None:
        self.denoiser.last_denoised_uncond = value

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        j = self.plan.step_of_sigma.get(float(sigma.flatten()[0]), 0)
        self.denoiser.step = j * self.plan.total // self.plan.steps
        return self.denoiser(x, sigma, **extra_args)


def _run(
    p: Any, a: InversionArgs, plan: _Plan, lam: float, rows: list[int], uncond: Any, image_cond: Any
) -> torch.Tensor | None:
    from modules import sd_samplers_common, shared

    init = p.init_latent
    batch = init.shape[0]
    denoiser_cls, _ = hosts.current().sampler_classes()
    den = denoiser_cls(p.sampler)
    # What Sampler.initialize and sample_img2img set on the sampler's own CFG denoiser.
    den.p = p
    den.mask = _subset(getattr(p, "mask", None), rows, batch)
    den.nmask = _subset(getattr(p, "nmask", None), rows, batch)
    den.init_latent = init[rows]
    den.image_cfg_scale = getattr(p, "image_cfg_scale", None)
    den.steps, den.total_steps, den.step = plan.steps, plan.total, 0
    extra_args = {
        "cond": _source_conds(p, a.source_prompt, len(rows)),
        "image_cond": _subset(image_cond, rows, batch),
        "uncond": _subset(uncond, rows, batch),
        "cond_scale": lam,
        "s_min_uncond": getattr(p, "s_min_uncond", 0.0),
    }
    # iterations > 0 also runs the refined chain and the two round trips it is chosen by: the bar
    # counts every phase's steps (cfgpp.inversion_progress_steps), so it fills exactly once
    n_steps = cfgpp.inversion_progress_steps(len(plan.ascending) - 1, a.iterations)
    state = shared.state

    def progress(d: dict) -> None:
        state.sampling_step = d["step"]  # the live preview comes from the CFG denoiser itself

    uses_hidiffusion = getattr(p, generation.P_ARGS, None) is not None
    if uses_hidiffusion:
        generation.open_pass(p)  # the sampling's model; HiDiffusion's own hook reopens it after us
    saved = (state.sampling_steps, getattr(state, "textinfo", None))
    state.sampling_steps, state.sampling_step = n_steps, 0
    state.textinfo = OWNER
    try:
        return cfgpp.invert_cfgpp(
            _ClockedModel(den, plan),
            init[rows].float(),
            plan.ascending.to(init.device),
            extra_args,
            callback=progress,
            disable=None,
            iterations=a.iterations,
        )
    except sd_samplers_common.InterruptedException:
        return None
    finally:
        state.sampling_steps, state.textinfo = saved
        state.sampling_step = 0
        if uses_hidiffusion:
            generation.open_pass(p)  # a fresh pass, as if the inversion had not used it


def _source_conds(p: Any, prompt: str, n: int) -> Any:
    """The source prompt's conditioning for ``n`` images, as A1111 1.10 builds ``p.c``."""
    from modules import prompt_parser, shared

    text = EXTRA_NETWORK.sub("", prompt)
    prompts = prompt_parser.SdConditioning([text] * n, width=p.width, height=p.height)
    steps = getattr(p, "firstpass_steps", None) or p.steps
    try:
        from modules import devices

        autocast = devices.autocast()
    except ImportError:
        autocast = contextlib.nullcontext()
    old_scheduling = bool(getattr(shared.opts, "use_old_scheduling", False))
    with autocast:
        return prompt_parser.get_multicond_learned_conditioning(
            shared.sd_model, prompts, steps, None, old_scheduling
        )


# -- the PNG-info button ------------------------------------------------------------------------
def prompt_from_image(image: Any) -> Any:
    """The prompt in an image's PNG info (A1111 infotext), or no change when it has none."""
    if image is None:
        return _no_change()
    text = None
    try:
        from modules import images

        text, _ = images.read_info_from_image(image)
    except (ImportError, AttributeError):
        info = getattr(image, "info", None) or {}
        text = info.get("parameters")
    if not text:
        return _no_change()
    try:
        from modules.infotext_utils import parse_generation_parameters
    except ImportError:  # SD.Next: an empty infotext_utils; the parser lives on in copypaste
        from modules.generation_parameters_copypaste import parse_generation_parameters

    return parse_generation_parameters(text).get("Prompt") or ""


def _no_change() -> Any:
    import gradio as gr

    return gr.update()
