"""CFG++ inversion for diffusers img2img pipelines: the latent an edit starts from.

    with cfgpp(pipe, "euler", scale=0.6):
        start = invert_cfgpp(pipe, image, "a photo of a cat", strength=1.0, num_inference_steps=30)
        with start_from(pipe, start):
            edited = pipe("a photo of a dog", image=image, strength=1.0, num_inference_steps=30).images[0]

How it stays exact without re-implementing any pipeline:

1. Probe. The pipeline itself is called once with the source prompt and the caller's keyword
   arguments. At its ``scheduler.add_noise`` the clean image latent (VAE-encoded, batched, as the
   pass will see it), the begin timestep of the strength and the scheduler's coordinates are read;
   at its first UNet call the conditioning (``[negative, source]`` embeddings, SDXL's added
   conditioning, timestep_cond, ...) is read and the call is cut short: no UNet forward runs.
2. Invert. `lib_hidiff.cfgpp.invert_cfgpp` (k-diffusion convention) runs over the sigmas of the
   scheduler's timesteps from the begin index on (Euler-type: ``scheduler.sigmas``; DDIM: the VE
   sigmas of its timesteps and its final alpha), on `_KDiffusionUNet`: the UNet called exactly as
   the pipeline calls it, returning the guided x0 D_λ and keeping D_u of the same batch.
3. Start. `start_from(pipe, latents)` makes the next img2img call's one ``add_noise`` return the
   inverted latent instead of image + noise; the CFG++ Euler / DDIM (η = 0) scheduler then retraces
   the inversion.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lib_hidiff.cfgpp import invert_cfgpp as _invert_kdiffusion

from .scheduling import CFGppSchedulerMixin, check_scale

__all__ = ["attach_start", "invert_cfgpp", "start_from"]

logger = logging.getLogger("lib_hidiff.diffusers")

OWNER = "CFG++ inversion"
MAX_ITERATIONS = 100  # a typo guard; every iteration costs one more UNet batch per step


class _Probed(Exception):
    """Raised from the UNet pre-hook: the probe has what it needs, the pipeline call stops."""


class _Probe:
    """What one pipeline call shows before its first UNet forward (module docstring, step 1)."""

    def __init__(self) -> None:
        self.clean: torch.Tensor | None = None  # image latent as add_noise receives it
        self.timestep: Any = None  # the begin timestep(s) add_noise received
        self.gain: torch.Tensor | None = None  # add_noise(1, 0, t): sample = gain * x_VE
        self.noise_gain: torch.Tensor | None = None  # add_noise(0, 1, t)
        self.unet_args: tuple = ()
        self.unet_kwargs: dict[str, Any] = {}
        self.unet_input: torch.Tensor | None = None
        self.noised: torch.Tensor | None = None  # what add_noise returned: the pass's first sample

    def add_noise(self, original: Any, samples: torch.Tensor, noise: torch.Tensor, timesteps: Any, *a, **k):
        if self.clean is None:
            self.clean = samples.detach().clone()
            self.timestep = timesteps
            rows = [samples.shape[0]] + [1] * (samples.ndim - 1)
            ones = torch.ones(rows, device=samples.device, dtype=torch.float32)
            self.gain = original(ones, torch.zeros_like(ones), timesteps, *a, **k).flatten()
            self.noise_gain = original(torch.zeros_like(ones), ones, timesteps, *a, **k).flatten()
            self.noised = original(samples, noise, timesteps, *a, **k)
            return self.noised
        return original(samples, noise, timesteps, *a, **k)

    def pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        sample = kwargs.get("sample", args[0] if args else None)
        self.unet_input = sample
        self.unet_args = tuple(args[2:])
        self.unet_kwargs = {k: v for k, v in kwargs.items() if k not in ("sample", "timestep")}
        raise _Probed


def _takes(pipe: Any, *names: str) -> bool:
    try:
        params = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False
    return all(n in params for n in names)


def _check(pipe: Any, strength: Any, steps: Any, iterations: Any) -> None:
    unet = getattr(pipe, "unet", None)
    if (
        unet is None
        or not hasattr(unet, "register_forward_pre_hook")
        or getattr(pipe, "scheduler", None) is None
    ):
        raise ValueError(
            f"{OWNER} needs a diffusers pipeline with a UNet and a scheduler; got {type(pipe).__name__}"
        )
    if not _takes(pipe, "image", "strength"):
        raise ValueError(
            f"{OWNER} needs an image-to-image pipeline (it takes image= and strength=); got "
            f"{type(pipe).__name__}: use AutoPipelineForImage2Image.from_pipe(pipe), which shares its weights"
        )
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"{OWNER}: strength must be a number in (0, 1]; got {strength!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{OWNER}: num_inference_steps must be an integer >= 1; got {steps!r}")
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, int)
        or not 0 <= iterations <= MAX_ITERATIONS
    ):
        raise ValueError(
            f"{OWNER}: iterations must be an integer in [0, {MAX_ITERATIONS}]; got {iterations!r}"
        )


def _lambda(pipe: Any, scale: Any) -> float:
    if scale is None:
        if isinstance(pipe.scheduler, CFGppSchedulerMixin):
            return float(pipe.scheduler.cfgpp_scale)
        raise ValueError(
            f"{OWNER}: give scale= (λ), or run it inside cfgpp(pipe, ...) so λ is the CFG++ scheduler's"
        )
    return check_scale(scale)


def _run_probe(pipe: Any, call_kwargs: dict[str, Any]) -> _Probe:
    probe = _Probe()
    scheduler = pipe.scheduler
    original = scheduler.add_noise  # bound method (or an instance attribute already there)
    had_own = "add_noise" in vars(scheduler)

    def add_noise(samples, noise, timesteps, *a, **k):
        return probe.add_noise(original, samples, noise, timesteps, *a, **k)

    # The caller passes the same generator to the edit call: the probe's draws (the VAE's latent
    # sample, the noise) are given back, so the edit encodes the very latent that was inverted.
    generators = _generators(call_kwargs.get("generator"))
    states = [g.get_state() for g in generators]
    scheduler.add_noise = add_noise
    handle = pipe.unet.register_forward_pre_hook(probe.pre_hook, with_kwargs=True, prepend=True)
    try:
        pipe(**call_kwargs)
    except _Probed:
        pass
    finally:
        handle.remove()
        for g, state in zip(generators, states):
            g.set_state(state)
        if had_own:
            scheduler.add_noise = original
        else:
            del scheduler.add_noise
    if probe.clean is None:
        raise ValueError(
            f"{OWNER}: the pipeline added no noise to the image (SDXL denoising_start, or not an img2img "
            "pipeline); nothing to invert"
        )
    if probe.unet_input is None:
        raise ValueError(f"{OWNER}: the pipeline ran no UNet step (strength too low for these steps?)")
    if probe.unet_input.shape[0] != 2 * probe.clean.shape[0]:
        raise ValueError(
            f"{OWNER}: the pipeline's UNet batch has {probe.unet_input.shape[0]} rows for "
            f"{probe.clean.shape[0]} images, not [uncond, cond] (guidance_scale must be > 1)"
        )
    return probe


def _generators(value: Any) -> list[torch.Generator]:
    items = value if isinstance(value, (list, tuple)) else [value]
    unique = {id(g): g for g in items if isinstance(g, torch.Generator)}
    return list(unique.values())


def _begin_index(scheduler: Any, timestep: Any) -> int:
    begin = getattr(scheduler, "begin_index", None)
    if isinstance(begin, int):
        return begin
    t = float(torch.as_tensor(timestep).flatten()[0])
    values = torch.as_tensor(scheduler.timesteps).detach().double().cpu()
    return int(torch.argmin((values - t).abs()))


def _sigmas(scheduler: Any, begin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(descending VE sigmas the pass steps over, incl. where it ends; their timesteps)."""
    from diffusers import DDIMScheduler

    timesteps = torch.as_tensor(scheduler.timesteps)[begin:]
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() == len(scheduler.timesteps) + 1:
        return sigmas[begin:].detach().double().cpu(), timesteps
    if isinstance(scheduler, DDIMScheduler):
        # DDIMScheduler.step's own alphas: ᾱ_t for each timestep, then the one after the last step
        ac = scheduler.alphas_cumprod.detach().double().cpu()
        last = int(timesteps[-1]) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        final = ac[last] if last >= 0 else torch.as_tensor(scheduler.final_alpha_cumprod).double().cpu()
        alphas = torch.cat([ac[timesteps.long().cpu()], final.reshape(1)])
        return ((1 - alphas) / alphas).sqrt(), timesteps
    raise ValueError(
        f"{OWNER}: {type(scheduler).__name__} has neither sigmas nor DDIM's timestep grid to invert over "
        "(use cfgpp(pipe, 'euler') or 'ddim')"
    )


class _KDiffusionUNet:
    """The pipeline's UNet as a k-diffusion guided denoiser (lib_hidiff.cfgpp's model contract).

    ``model(x, sigma)`` with x in VE coordinates returns D_λ = D_u + λ (D_c − D_u) and keeps D_u of
    the same ``[uncond, cond]`` batch in ``last_denoised_uncond``. The UNet gets what the pipeline
    gives it at that step: x / √(σ² + 1) (Euler's scale_model_input; a VP sample as is), the
    scheduler's timestep for σ, and the probed conditioning.
    """

    def __init__(
        self,
        unet: Any,
        probe: _Probe,
        sigmas: torch.Tensor,
        timesteps: torch.Tensor,
        lam: float,
        prediction: str,
    ) -> None:
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(
                f"{OWNER}: prediction_type {prediction!r} is not supported (epsilon, v_prediction, sample)"
            )
        self.unet = unet
        self.probe = probe
        self.sigmas = sigmas.double()
        self.timesteps = timesteps
        self.lam = lam
        self.prediction = prediction
        self.dtype = probe.unet_input.dtype
        self.last_denoised_uncond: torch.Tensor | None = None

    def _timestep(self, sigma: float) -> Any:
        i = int(torch.argmin((self.sigmas[: len(self.timesteps)] - sigma).abs()))
        if abs(float(self.sigmas[i]) - sigma) > 1e-4 * max(1.0, sigma):
            raise RuntimeError(f"{OWNER}: σ {sigma:g} is not on the scheduler's grid")
        return self.timesteps[i]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        s = float(sigma.flatten()[0])
        t = self._timestep(s)
        x_in = (x / math.sqrt(s * s + 1)).to(self.dtype)
        out = self.unet(torch.cat([x_in, x_in]), t, *self.probe.unet_args, **self.probe.unet_kwargs)
        out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
        e_u, e_c = out.float().chunk(2)
        xf = x.float()
        if self.prediction == "epsilon":
            d_u, d_c = xf - s * e_u, xf - s * e_c
        elif self.prediction == "v_prediction":
            c_skip, c_out = 1 / (s * s + 1), -s / math.sqrt(s * s + 1)
            d_u, d_c = c_skip * xf + c_out * e_u, c_skip * xf + c_out * e_c
        else:
            d_u, d_c = e_u, e_c
        self.last_denoised_uncond = d_u.to(x.dtype)
        return (d_u + self.lam * (d_c - d_u)).to(x.dtype)


def invert_cfgpp(
    pipe: Any,
    image: Any,
    prompt: str | list[str] | None = "",
    negative_prompt: str | list[str] | None = None,
    *,
    num_inference_steps: int = 50,
    strength: float = 1.0,
    scale: float | None = None,
    iterations: int = 0,
    progress_bar: bool | None = None,
    **pipe_kwargs: Any,
) -> torch.Tensor:
    """The latent an img2img pass with a CFG++ Euler / DDIM scheduler starts from to give `image` back.

    - `pipe`: a diffusers image-to-image pipeline (SD 1.x / 2.x / SDXL img2img; for a txt2img one use
      ``AutoPipelineForImage2Image.from_pipe(pipe)``). Its current scheduler's timesteps are the ones
      inverted: run it inside ``cfgpp(pipe, "euler" or "ddim", ...)``.
    - `image`: what the pipeline's ``image=`` takes (PIL, tensor, or a 4-channel latent tensor).
    - `prompt`, `negative_prompt`: the source prompt (what the image shows) and the negative prompt
      of the edit (it is the unconditional side in both passes). Or pass ``prompt_embeds=`` etc.
    - `num_inference_steps`, `strength`: the same as in the edit call (they fix the begin index).
    - `scale`: λ; None = the CFG++ scheduler's ``cfgpp_scale``.
    - `iterations`: refinement (lib_hidiff.cfgpp.invert_cfgpp): 0 = the paper's step, one UNet batch
      per step; k > 0 = at most k + 5 batches per step (the plain and the refined chain, then both
      sampled back to keep, per image, the one whose round trip is closer).
    - `progress_bar`: show the inversion's own progress bar; None = as the pipeline's progress bar
      (``pipe.set_progress_bar_config(disable=...)``). A host with its own bar passes False.
    - `pipe_kwargs`: every other argument of the edit call that shapes the UNet call or the image
      latent (guidance_scale > 1, height/width, SDXL's original_size / aesthetic_score, generator,
      cross_attention_kwargs, ...).

    Returns the latent in the scheduler's sample coordinates at the begin timestep (float32, one row
    per image); pass it with `start_from(pipe, latents)`. Raises ValueError (one line) before
    anything runs for bad arguments; the pipeline is left as it was.
    """
    _check(pipe, strength, num_inference_steps, iterations)
    lam = _lambda(pipe, scale)
    call = dict(pipe_kwargs)
    call.update(image=image, strength=strength, num_inference_steps=num_inference_steps, output_type="latent")
    if prompt is not None and "prompt_embeds" not in call:
        call["prompt"] = prompt
    if negative_prompt is not None and "negative_prompt_embeds" not in call:
        call["negative_prompt"] = negative_prompt
    scheduler = pipe.scheduler
    probe = _run_probe(pipe, call)
    begin = _begin_index(scheduler, probe.timestep)
    sigmas, timesteps = _sigmas(scheduler, begin)
    gain = probe.gain.double().cpu()
    sigma_start = float(sigmas[0])
    measured = float((probe.noise_gain.double().cpu() / gain)[0])
    if abs(measured - sigma_start) > 1e-3 * max(1.0, sigma_start):
        raise ValueError(
            f"{OWNER}: {type(scheduler).__name__}.add_noise starts at σ {measured:.4g}, its schedule at "
            f"{sigma_start:.4g}; this scheduler cannot be inverted"
        )
    # Samples are VE (Euler: gain 1) or VP (DDIM, DPM: gain 1/√(1 + σ²)); either way the UNet must see
    # x_VE / √(σ² + 1), which is checked on the pass's first input.
    vp = abs(float(gain[0]) - 1 / math.sqrt(1 + sigma_start**2)) < abs(float(gain[0]) - 1)
    first = probe.noised.float() / float(gain[0]) / math.sqrt(1 + sigma_start**2)
    seen = probe.unet_input[: first.shape[0]].float()
    if float((seen - first).norm()) > 1e-2 * float(first.norm()) + 1e-6:
        raise ValueError(
            f"{OWNER}: {type(scheduler).__name__} scales the UNet input otherwise than x / √(σ² + 1); "
            "use cfgpp(pipe, 'euler') or cfgpp(pipe, 'ddim')"
        )
    prediction = scheduler.config.get("prediction_type", "epsilon")
    model = _KDiffusionUNet(pipe.unet, probe, sigmas, timesteps, lam, prediction)
    # The clean latent is the pass's last sample, at σ_end (0; DDIM: its final alpha; a σ_min end),
    # in VE coordinates.
    sigma_end = float(sigmas[-1])
    x = probe.clean.float() * (math.sqrt(1 + sigma_end**2) if vp else 1.0)
    ascending = sigmas.flip(0).to(device=x.device, dtype=torch.float32)
    if progress_bar is None:
        disable = bool(getattr(pipe, "_progress_bar_config", {}).get("disable", False))
    else:
        disable = not progress_bar
    y = _invert_kdiffusion(model, x, ascending, disable=disable, iterations=iterations)
    rows = [-1] + [1] * (y.ndim - 1)
    return y * gain.to(device=y.device, dtype=y.dtype).reshape(rows)


def attach_start(pipe: Any, latents: torch.Tensor) -> Callable[[], bool]:
    """`start_from` without a `with`: returns undo(), which says whether the start was used.

    For hosts that open and close a pass themselves (SD.Next's process_pre / process_post).
    """
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "add_noise"):
        raise ValueError(f"start_from needs a diffusers pipeline with a scheduler; got {type(pipe).__name__}")
    if not isinstance(latents, torch.Tensor):
        raise ValueError(
            f"start_from needs the latent tensor from invert_cfgpp; got {type(latents).__name__}"
        )
    original = scheduler.add_noise
    had_own = "add_noise" in vars(scheduler)
    state = {"used": False, "attached": True}

    def add_noise(samples, noise, timesteps, *a, **k):
        if not state["used"] and tuple(samples.shape) == tuple(latents.shape):
            state["used"] = True
            return latents.to(device=samples.device, dtype=samples.dtype)
        return original(samples, noise, timesteps, *a, **k)

    scheduler.add_noise = add_noise

    def undo() -> bool:
        if state["attached"]:
            state["attached"] = False
            if had_own:
                scheduler.add_noise = original
            elif vars(scheduler).get("add_noise") is add_noise:
                del scheduler.add_noise
        return state["used"]

    return undo


@contextlib.contextmanager
def start_from(pipe: Any, latents: torch.Tensor) -> Iterator[None]:
    """Inside the `with`, the pipeline's next img2img call starts from `latents` (from invert_cfgpp).

    img2img pipelines build their start as ``scheduler.add_noise(image_latent, noise, t_begin)``;
    the first such call with `latents`' shape returns `latents` (in that call's dtype and device)
    instead. Later calls (inpainting's per-step blends) and other shapes are the scheduler's own.
    Enter it after ``cfgpp(pipe, ...)``: it holds the scheduler that is current on entry.
    """
    undo = attach_start(pipe, latents)
    used = False
    try:
        yield
    finally:
        used = undo()
        if not used:
            logger.warning(
                "start_from: the pipeline made no img2img start of shape %s; the inverted latent was not used",
                tuple(latents.shape),
            )
