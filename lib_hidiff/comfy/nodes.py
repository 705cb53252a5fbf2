"""The ComfyUI nodes: HiDiffusion (MODEL → MODEL), CFG++ inversion, and the CFG++ samplers ComfyUI lacks.

Classic node classes (``INPUT_TYPES`` / ``RETURN_TYPES`` / ``FUNCTION``): what an older ComfyUI
(no ``comfy_api.latest``) registers from ``NODE_CLASS_MAPPINGS``, and the one implementation the V3
nodes of :mod:`.nodes_v3` (what a125cd84 registers) build their schemas from and run. ComfyUI's
``comfy`` package is imported inside the functions only, so this module imports anywhere (tests;
the WebUIs never import it).

HiDiffusion's inputs are the WebUI accordion's settings with the same names and ranges, from the
core's data (lib_hidiff.unet.presets). The WebUI's hires-pass policy is no input: in a graph the
second pass is another sampler whose MODEL input says what it runs with (the plain MODEL, this
node's output, or another HiDiffusion node with RAU-Net off -- the WebUI's "MSW-MSA only").
"""

from __future__ import annotations

from typing import Any

import torch

import lib_hidiff.unet as hd
from lib_hidiff.unet.presets import PRESETS, TIME_MODES, UPSCALE_MODES, row_for

from .hidiffusion import HiDiffusionWrappers, diffusion_model_of, unsupported_reason, warn_once
from .samplers import invert_sampler_function, sample_ddim_cfgpp, sample_dpmpp_sde_cfgpp

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "CFGppInversion",
    "HiDiffusion",
    "SamplerDDIMCFGpp",
    "SamplerDPMPPSDECFGpp",
]


SEED_MAX = 0xFFFFFFFFFFFFFFFF  # ComfyUI's seed widgets' range (KSampler, SamplerCustom)


def _fraction(default: float, tooltip: str) -> tuple[str, dict]:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tooltip})


def _flag(default: bool, tooltip: str) -> tuple[str, dict]:
    return ("BOOLEAN", {"default": default, "tooltip": tooltip})


def _choice(options: tuple[str, ...], default: str, tooltip: str) -> tuple[list[str], dict]:
    return (list(options), {"default": default, "tooltip": tooltip})


class HiDiffusion:
    """RAU-Net + MSW-MSA on SD 1.x/2.x/SDXL UNets, during the samplings of the returned MODEL only."""

    DESCRIPTION = (
        "HiDiffusion (RAU-Net + MSW-MSA): SD 1.x/2.x/SDXL above their native size without repeated "
        "objects, and faster. Patches only this MODEL's samplings; other models pass through."
    )
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL",),
                "preset": _choice(
                    PRESETS, "auto", "auto: the official table row for the UNet family and latent size"
                ),
                "raunet": _flag(True, "RAU-Net: resolution-aware down/upsampling (structure at high sizes)"),
                "mswmsa": _flag(True, "MSW-MSA: shifted-window self-attention on the top level (speed)"),
                "custom_timing": _flag(False, "use T1 / T2 / aggressive below instead of the preset's"),
                "t1": _fraction(0.4, "T1: SD 1.x/2.x RAD/RAU end, SDXL CA end (fraction of the steps)"),
                "t2": _fraction(0.0, "T2: SD 1.x/2.x CA end, SDXL RAD/RAU end (fraction of the steps)"),
                "aggressive": _fraction(0.16, "SDXL two-phase split (fraction of the steps); 0 = off"),
                "time_mode": _choice(
                    TIME_MODES, "percent", "windows over the steps (official) or model time"
                ),
                "msw_start": _fraction(0.0, "MSW-MSA from this fraction of the steps"),
                "msw_end": _fraction(1.0, "MSW-MSA until this fraction of the steps"),
                "rau_upscale": _choice(UPSCALE_MODES, "nearest", "how RAU upsamples to the skip size"),
                "ca_upscale": _choice(UPSCALE_MODES, "bicubic", "how CA's unpool upsamples"),
            }
        }

    def patch(
        self,
        model: Any,
        preset: str = "auto",
        raunet: bool = True,
        mswmsa: bool = True,
        custom_timing: bool = False,
        t1: float = 0.4,
        t2: float = 0.0,
        aggressive: float = 0.16,
        time_mode: str = "percent",
        msw_start: float = 0.0,
        msw_end: float = 1.0,
        rau_upscale: str = "nearest",
        ca_upscale: str = "bicubic",
    ) -> tuple[Any]:
        unet = diffusion_model_of(model)
        reason = unsupported_reason(unet)
        if reason is not None:
            warn_once(reason)
            return (model,)
        timing = {"t1": t1, "t2": t2, "aggressive": aggressive} if custom_timing else {}
        try:
            settings = hd.HiDiffusionSettings(
                preset=preset,
                raunet=bool(raunet),
                mswmsa=bool(mswmsa),
                time_mode=time_mode,
                msw_start=float(msw_start),
                msw_end=float(msw_end),
                rau_upscale=rau_upscale,
                ca_upscale=ca_upscale,
                **{k: float(v) for k, v in timing.items()},
            )
            if preset != "auto":
                layout = hd.inspect_unet(unet)
                row_for(preset, layout.family, layout.native)  # a preset of another family
        except hd.SettingsError as e:
            warn_once(f"{e}; sampling without HiDiffusion")
            return (model,)
        patched = model.clone()
        if settings.raunet or settings.mswmsa:
            HiDiffusionWrappers(settings).attach(patched)
        return (patched,)


class CFGppInversion:
    """The latent (or noise) that Euler CFG++ / DDIM CFG++ over ``sigmas`` takes back to the image."""

    DESCRIPTION = (
        "CFG++ inversion: invert the source latent with the source prompt; sample from the result "
        "with euler_cfg_pp / DDIM CFG++ (η 0), add_noise off, the same sigmas and cfg, and a new "
        "prompt to edit (the source prompt gives the image back)."
    )
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "NOISE")
    RETURN_NAMES = ("inverted_latent", "inverted_noise")
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING", {"tooltip": "the source prompt (what the image shows)"}),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT", {"tooltip": "the VAE-encoded source image"}),
                "sigmas": (
                    "SIGMAS",
                    {
                        "tooltip": "the schedule the edit samples (BasicScheduler; denoise < 1 inverts part way)"
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.01,
                        "round": 0.01,
                        "tooltip": "CFG++ λ: use the edit sampler's cfg",
                    },
                ),
                "iterations": (
                    "INT",
                    {
                        "default": 2,
                        "min": 0,
                        "max": 20,
                        "tooltip": "refinement per step (0: the paper's plain inversion); never worse than 0",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": SEED_MAX,
                        "control_after_generate": False,
                        "tooltip": "the edit sampler's noise_seed (keep it fixed): a HiDiffusion MODEL seeds "
                        "its MSW-MSA window shifts with it, so inversion and edit must share it",
                    },
                ),
            }
        }

    def invert(
        self,
        model: Any,
        positive: Any,
        negative: Any,
        latent_image: dict,
        sigmas: torch.Tensor,
        cfg: float,
        iterations: int,
        seed: int = 0,
    ) -> tuple[dict, Any]:
        import comfy.sample
        import comfy.samplers
        import comfy.utils

        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        if sigmas.shape[-1] < 2:
            out = {k: v for k, v in latent_image.items() if k != "noise_mask"}
            return (out, InvertedNoise(torch.zeros_like(latent), seed))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sampler = comfy.samplers.KSAMPLER(invert_sampler_function(int(iterations)))
        samples = guider.sample(
            torch.zeros_like(latent),
            latent,
            sampler,
            sigmas,
            disable_pbar=not getattr(comfy.utils, "PROGRESS_BAR_ENABLED", False),
            seed=int(seed),  # the sampling seed: HiDiffusion's window shifts (hidiffusion.py) use it
        )
        samples = samples.to(latent.device)
        out = {k: v for k, v in latent_image.items() if k != "noise_mask"}
        out["samples"] = samples
        return (out, InvertedNoise(_as_noise(model, samples, latent, sigmas), seed))


def _as_noise(model: Any, inverted: torch.Tensor, source: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The NOISE that ComfyUI's samplers turn into ``inverted`` when starting from ``source``:
    they start from ``noise_scaling(σ0, noise, process_latent_in(source), max_denoise)``, linear in
    noise (comfy/samplers.py:752), so noise = (y − L) / c with c = noise_scaling(σ0, 1, 0)."""
    sampling = model.get_model_object("model_sampling")
    latent_in = model.get_model_object("process_latent_in")
    y = latent_in(inverted)
    base = latent_in(source) if torch.count_nonzero(source) > 0 else source
    sigma0 = sigmas[:1].to(y)
    max_sigma = float(sampling.sigma_max)
    max_denoise = abs(float(sigma0) - max_sigma) <= 1e-5 * max_sigma or float(sigma0) > max_sigma
    scale = sampling.noise_scaling(sigma0, torch.ones_like(y[:1]), torch.zeros_like(y[:1]), max_denoise)
    return ((y - base) / scale).cpu()


class InvertedNoise:
    """A NOISE (``generate_noise(latent)``, ``seed``) holding the inverted noise. SamplerCustomAdvanced
    samples with ``seed=noise.seed`` (comfy_extras/nodes_custom_sampler.py at a125cd84), so a HiDiffusion
    MODEL sampled from this NOISE shifts its windows as the inversion did."""

    def __init__(self, noise: torch.Tensor, seed: int = 0):
        self.noise = noise
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if tuple(samples.shape) != tuple(self.noise.shape):
            raise ValueError(
                f"CFG++ inversion: the inverted noise is {tuple(self.noise.shape)}, the latent "
                f"{tuple(samples.shape)}; sample the latent that was inverted"
            )
        return self.noise.clone()


_SAMPLER_FLOAT = {"min": 0.0, "step": 0.01, "round": False}


class SamplerDDIMCFGpp:
    """DDIM CFG++ with η (η = 0: the deterministic sampler the CFG++ inversion inverts)."""

    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "eta": ("FLOAT", {"default": 0.0, "max": 1.0, **_SAMPLER_FLOAT}),
                "s_noise": ("FLOAT", {"default": 1.0, "max": 10.0, **_SAMPLER_FLOAT}),
            }
        }

    def get_sampler(self, eta: float, s_noise: float) -> tuple[Any]:
        import comfy.samplers

        return (comfy.samplers.KSAMPLER(sample_ddim_cfgpp, {"eta": float(eta), "s_noise": float(s_noise)}),)


class SamplerDPMPPSDECFGpp:
    """DPM++ SDE CFG++ (this project's rule; there is no official one)."""

    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "eta": ("FLOAT", {"default": 1.0, "max": 100.0, **_SAMPLER_FLOAT}),
                "s_noise": ("FLOAT", {"default": 1.0, "max": 100.0, **_SAMPLER_FLOAT}),
                "r": ("FLOAT", {"default": 0.5, "max": 1.0, **_SAMPLER_FLOAT}),
            }
        }

    def get_sampler(self, eta: float, s_noise: float, r: float) -> tuple[Any]:
        import comfy.samplers

        if not 0.0 < float(r) <= 1.0:
            raise ValueError(f"DPM++ SDE CFG++: 'r' must be in (0, 1]; got {r!r}")
        options = {"eta": float(eta), "s_noise": float(s_noise), "r": float(r)}
        return (comfy.samplers.KSAMPLER(sample_dpmpp_sde_cfgpp, options),)


# Node ids sort next to ComfyUI's own (SamplerDPMPP_SDE, SamplerEulerAncestralCFGPP, ...).
NODE_CLASS_MAPPINGS: dict[str, type] = {
    "HiDiffusion_lib_hidiff": HiDiffusion,
    "CFGppInversion": CFGppInversion,
    "SamplerDDIMCFGPP": SamplerDDIMCFGpp,
    "SamplerDPMPP_SDE_CFGPP": SamplerDPMPPSDECFGpp,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "HiDiffusion_lib_hidiff": "HiDiffusion",
    "CFGppInversion": "CFG++ Inversion",
    "SamplerDDIMCFGPP": "SamplerDDIMCFG++",
    "SamplerDPMPP_SDE_CFGPP": "SamplerDPMPP_SDE_CFG++",
}
