"""The Forge adapter: lllyasviel's stable-diffusion-webui-forge 2.x and Forge Neo (same ``backend/``).

Forge keeps A1111's ``modules`` API for scripts, UI, infotext, XYZ, settings and the HTTP API, so
this adapter is the A1111 one with what Forge changes (facts: HOSTS.md, Forge dfdcbab):

* UNet: ``sd_model.forge_objects.unet`` is the generation's ``UnetPatcher``; its
  ``.model.diffusion_model`` is the ldm-like ``IntegratedUNet2DConditionModel``. Every clone of the
  patcher shares that module tree, and processing hands each generation a fresh container of the
  loaded patcher, so the core's removable hooks go on that tree per pass (installed at
  ``process_before_every_sampling``, which Forge runs twice before the hires pass -- installing is
  idempotent) and come off after the generation, like on A1111. Nothing goes into the patcher's
  ``model_options``: those belong to the loaded model, not to one generation. A model reload builds
  a new tree (``on_model_loaded`` closes the gate; the old tree dies with its hooks).
* The model has no ``parameterization``: 768-v SD 2.x is recognised from the predictor's
  prediction type (the core tells SD 2.x from its linear projections, Forge's own Linear class
  included).
* Non-UNet models (Flux, SD3, Chroma, ...): one message, generation untouched.
* ControlNet / T2I-Adapter residuals come as the UNet's ``control`` dict: the core fits them to the
  maps RAU-Net leaves (``ControlDictSinks``). ControlLLLite is an attention patch whose control
  embedding has the full-size token count: with it in the pass's patches RAU-Net is off (one
  message), MSW-MSA runs.
* CFG++: Forge's CFG denoiser never calls ``combine_denoised``; it keeps the uncond as
  ``last_noise_uncond = (x - uncond_pred) / sigma`` when ``need_last_noise_uncond`` is set, so
  D_u = x - sigma * last_noise_uncond. Two Forge behaviours are neutralised for the duration of
  one call of our denoiser: the hires pass replaces the sampler's scale by ``p.hr_cfg`` (we put our
  λ there), and a scale of 1 would skip the uncond batch (``disable_cfg1_optimization``). λ of the
  hires pass comes from Forge's Hires CFG. With no negative conditioning at all (Forge drops it
  at CFG 1) the samplers fall back to their base rule (GuidedDenoiser logs it).
* CFG++ inversion (img2img): Forge loads the UNet (device, LoRA weights, ControlNet pre_run) in
  ``sampling_prepare`` at the top of ``sample_img2img``, after ``process_before_every_sampling``.
  The inversion runs at the next point where a script can act: ``p.sampler_noise_scheduler_override``,
  which k-diffusion ``get_sigmas`` calls right after ``sampling_prepare`` and before the start
  latent is built from the noise (dfdcbab sd_samplers_kdiffusion.py:98-99, :138-147). Armed per
  pass at ``process_before_every_sampling``, it restores the previous override before anything
  else (one shot), runs the inversion (which overwrites the noise in place, as on A1111) and
  returns the sigmas ``get_sigmas`` would have built. Timestep samplers (DDIM, PLMS, UniPC) build
  their start latent with no such point and are refused with one line.
* Forge's built-in "DDIM CFG++" sets a scale multiplier its denoiser never reads (it guides with
  the full CFG as λ): ours is registered beside it as "DDIM CFG++ (k-diffusion)". Built-ins of the
  other names (Forge Neo 2.26 ships Euler / Euler a / DPM++ 2M CFG++, λ = raw CFG) are kept.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .a1111 import A1111Host
from .base import missing_features

if TYPE_CHECKING:
    import torch.nn as nn

    from lib_hidiff import unet as hd

__all__ = ["HOST", "ForgeHost"]

# Text a Forge 2.x / Neo checkout contains (install.py: the WebUI is not imported there).
FEATURES = {
    ("backend", "nn", "unet.py"): "class IntegratedUNet2DConditionModel",
    ("modules", "sd_samplers_cfg_denoiser.py"): "need_last_noise_uncond",
    ("modules", "scripts.py"): "def process_before_every_sampling",
}

# A denoiser that applies a sampler's scale multiplier (A1111 1.10: ``cond_scale * self.cond_...``).
_READS_MULTIPLIER = re.compile(r"\*\s*self\.cond_scale_miltiplier")


class ForgeHost(A1111Host):
    name = "forge"
    label = "Forge"
    cfgpp_inversion = True

    _forge_classes: ClassVar[dict[type, tuple[type, type]]] = {}

    # -- detection ---------------------------------------------------------------------------------
    @classmethod
    def detect(cls) -> bool:
        from . import has_module

        # modules_forge alone is also Forge 1.x / reForge (ldm_patched); 2.x and Neo have backend/.
        return has_module("modules_forge") and has_module("backend.patcher.unet")

    @classmethod
    def detect_root(cls, webui_root: str) -> bool:
        return os.path.isdir(os.path.join(webui_root, "modules_forge")) and os.path.isfile(
            os.path.join(webui_root, "backend", "patcher", "unet.py")
        )

    @classmethod
    def install_problems(cls, webui_root: str, torch_version: str | None, tag: str | None) -> list[str]:
        missing = missing_features(webui_root, FEATURES)
        if missing:
            return [
                "sd-webui-hidiffusion: this Forge lacks what the extension needs "
                f"({', '.join(missing)}); it supports Forge 2.x and Forge Neo. Update Forge (git pull)."
            ]
        return []

    # -- HiDiffusion ---------------------------------------------------------------------------------
    def unet(self, sd_model: Any) -> nn.Module | None:
        if not _is_sd(sd_model):
            return None
        patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
        return getattr(getattr(patcher, "model", None), "diffusion_model", None)

    def v_prediction(self, sd_model: Any) -> bool:
        patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
        predictor = getattr(getattr(patcher, "model", None), "predictor", None)
        return getattr(predictor, "prediction_type", None) == "v_prediction"

    def blocking(self, p: Any) -> str | None:
        sd_model = p.sd_model
        if not _is_sd(sd_model):
            return (
                f"HiDiffusion: {type(sd_model).__name__} models have no SD 1.x/2.x/SDXL UNet; "
                "generating without HiDiffusion"
            )
        return super().blocking(p)

    def adjust(
        self, p: Any, settings: hd.HiDiffusionSettings, is_hr: bool
    ) -> tuple[hd.HiDiffusionSettings, list[str]]:
        settings, messages = super().adjust(p, settings, is_hr)
        if settings.raunet and _has_lllite(p.sd_model):
            settings = settings.replace(raunet=False)
            messages.append(
                "HiDiffusion: ControlLLLite's attention patches need the full-size maps; "
                "RAU-Net is off for this pass, MSW-MSA runs"
            )
        return settings, messages

    # -- CFG++ samplers -------------------------------------------------------------------------------
    def sampler_classes(self) -> tuple[type, type]:
        from modules import sd_samplers_kdiffusion as K

        base = K.CFGDenoiserKDiffusion
        if base not in self._forge_classes:
            self._forge_classes[base] = _build_classes(K, *super().sampler_classes())
        return self._forge_classes[base]

    def builtin_is_usable(self, name: str) -> bool:
        if name != "DDIM CFG++":
            return True  # Neo's CFG++ built-ins are right (λ = raw CFG); others belong to extensions
        from modules import sd_samplers_cfg_denoiser

        try:
            source = inspect.getsource(sd_samplers_cfg_denoiser.CFGDenoiser)
        except (OSError, TypeError):
            return False
        return bool(_READS_MULTIPLIER.search(source))

    # -- CFG++ inversion (img2img) ------------------------------------------------------------------
    def inversion_blocking(self, p: Any) -> str | None:
        from ..inversion_args import OWNER

        sd_model = p.sd_model
        if not _is_sd(sd_model):
            return f"{OWNER} covers SD 1.x, 2.x and SDXL models, not {type(sd_model).__name__}"
        patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
        predictor = getattr(getattr(patcher, "model", None), "predictor", None)
        if getattr(predictor, "prediction_type", None) == "const":
            return f"{OWNER}: this model adds noise its own way (flow matching), which CFG++ does not cover"
        if not hasattr(p.sampler, "get_sigmas"):
            return (
                f"{OWNER} on Forge needs a k-diffusion sampler (Euler CFG++, DDIM CFG++ (k-diffusion), ...); "
                f"{p.sampler_name!r} builds its start latent where the inversion cannot run"
            )
        return None

    def run_inversion(self, p: Any, invert: Callable[[], Any]) -> None:
        p.sampler_noise_scheduler_override = _ArmedSchedule(p, invert)


class _ArmedSchedule:
    """``p.sampler_noise_scheduler_override`` for one img2img pass: runs the inversion once, inside
    ``get_sigmas`` (model ready, noise not used yet), and returns the pass's own sigmas."""

    def __init__(self, p: Any, invert: Callable[[], Any]):
        previous = getattr(p, "sampler_noise_scheduler_override", None)
        # armed again before it fired (a repeated hook): keep the original one
        self.previous = previous.previous if isinstance(previous, _ArmedSchedule) else previous
        self.p, self.sampler, self.invert = p, p.sampler, invert

    def __call__(self, steps: int) -> Any:
        p, previous = self.p, self.previous
        p.sampler_noise_scheduler_override = previous  # first: one shot, whatever happens next
        if p.sampler is self.sampler:  # the pass it was armed for
            try:
                self.invert()
            except Exception:  # as the script runner treats a failing process_before_every_sampling
                from modules import errors

                errors.report("Error running CFG++ inversion (in Forge's get_sigmas)", exc_info=True)
        if previous is not None:
            return previous(steps)
        return _undiscarded(p, p.sampler, steps)


def _undiscarded(p: Any, sampler: Any, steps: int) -> Any:
    """What the override must return for ``get_sigmas(p, n)`` (called with ``steps`` = n, or n + 1
    when it then drops the next-to-last sigma): the pass's sigmas, padded so that the drop gives
    them back (dfdcbab sd_samplers_kdiffusion.py:82-87, :131-132)."""
    import torch
    from modules import sd_samplers_common

    n, _ = sd_samplers_common.setup_img2img_steps(p)
    sigmas = sampler.get_sigmas(p, n)
    if steps == len(sigmas):  # the outer call will drop sigmas[-2]: give it one to drop
        sigmas = torch.cat([sigmas[:-1], sigmas[-2:-1], sigmas[-1:]])
    return sigmas


def _is_sd(sd_model: Any) -> bool:
    """Forge's engines say what they are; only SD 1.x / 2.x / SDXL have the UNet HiDiffusion knows."""
    if not hasattr(sd_model, "is_sd1"):
        return True  # not a Forge engine: let the layout inspection decide
    return any(getattr(sd_model, k, False) for k in ("is_sd1", "is_sd2", "is_sdxl"))


# Forge's ControlLLLite patch class (lib_controllllite.py:82): it concatenates a control embedding
# made once at the full token count with the tokens, so it fails on maps RAU-Net made smaller.
_LLLITE_PATCH = "control_net_lllite_patch"


def _has_lllite(sd_model: Any) -> bool:
    patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
    options = getattr(patcher, "model_options", None) or {}
    patches = options.get("transformer_options", {}).get("patches", {})
    return any(
        type(patch).__name__ == _LLLITE_PATCH
        for name in ("attn1_patch", "attn2_patch")
        for patch in patches.get(name, [])
    )


@contextlib.contextmanager
def _forge_call(denoiser: Any, cond_scale: float) -> Iterator[None]:
    """For one denoiser call: Forge keeps our λ in the hires pass and always runs the uncond batch."""
    p = denoiser.p
    hires = bool(getattr(p, "is_hr_pass", False)) and hasattr(p, "hr_cfg")
    patcher = getattr(
        getattr(getattr(denoiser.inner_model, "inner_model", None), "forge_objects", None), "unet", None
    )
    options = getattr(patcher, "model_options", None)
    had = None if options is None else options.get("disable_cfg1_optimization", _MISSING)
    saved_cfg = p.hr_cfg if hires else None
    try:
        if hires:
            p.hr_cfg = cond_scale  # Forge's denoiser replaces the scale by p.hr_cfg in the hires pass
        if options is not None:
            options["disable_cfg1_optimization"] = True  # λ = 1 must still run the uncond batch
        yield
    finally:
        if hires:
            p.hr_cfg = saved_cfg
        if options is not None:
            if had is _MISSING:
                options.pop("disable_cfg1_optimization", None)
            else:
                options["disable_cfg1_optimization"] = had


_MISSING = object()


def _build_classes(K: Any, a1111_denoiser: type, a1111_sampler: type) -> tuple[type, type]:
    from ..samplers import lambda_for

    class CfgppDenoiser(K.CFGDenoiserKDiffusion):
        """Forge's CFG denoiser, also exposing the unconditional x0 of each call."""

        # The inpainting blend of the guided prediction, applied to the uncond one (A1111 adapter).
        _blend = a1111_denoiser._blend

        def __init__(self, sampler: Any):
            super().__init__(sampler)
            self.last_denoised_uncond = None

        def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond, **kwargs):
            self.last_denoised_uncond = None
            self.need_last_noise_uncond = True
            self.last_noise_uncond = None
            with _forge_call(self, cond_scale):
                denoised = super().forward(
                    x,
                    sigma,
                    uncond=uncond,
                    cond=cond,
                    cond_scale=cond_scale,
                    s_min_uncond=s_min_uncond,
                    image_cond=image_cond,
                    **kwargs,  # Neo passes model_options; Forge 2.x takes none
                )
            noise = self.last_noise_uncond
            if uncond is not None and noise is not None:
                # Forge: last_noise_uncond = (x' - D_u) / sigma, x' = x pre-mixed with the noisy init
                # latent when inpainting; the blend below restores D_u there (exact for 0/1 masks).
                rows = x - sigma.view(-1, *([1] * (x.dim() - 1))) * noise.to(x.dtype)
                if self.mask is not None:
                    rows = self._blend(rows, sigma)
                self.last_denoised_uncond = rows
            return denoised

    class CfgppSampler(a1111_sampler):
        """The A1111 CFG++ sampler on the Forge denoiser; λ of the hires pass from Forge's Hires CFG."""

        def __init__(self, funcname: Any, sd_model: Any, options: dict | None = None):
            super().__init__(funcname, sd_model, options)
            self.model_wrap_cfg = CfgppDenoiser(self)
            self.model_wrap = self.model_wrap_cfg.inner_model

        def launch_sampling(self, steps: int, func: Any) -> Any:
            p, extra = self.p, self.sampler_extra_args
            hires = bool(getattr(p, "is_hr_pass", False))
            cfg = p.hr_cfg if hires and getattr(p, "hr_cfg", None) is not None else extra["cond_scale"]
            lam, notes = lambda_for(p, cfg)
            extra["cond_scale"] = lam  # the same dict the sampling call reads
            params = p.extra_generation_params
            for key, value in notes.items():
                if hires:
                    params.setdefault(key, value)  # the first pass's λ stays the recorded one
                else:
                    params[key] = value
            return K.KDiffusionSampler.launch_sampling(self, steps, func)

    return CfgppDenoiser, CfgppSampler


HOST = ForgeHost
