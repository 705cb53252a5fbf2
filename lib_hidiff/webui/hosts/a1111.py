"""The AUTOMATIC1111 WebUI 1.10 adapter (and forks that keep its ``modules``).

* UNet: ``sd_model.model.diffusion_model`` (ldm / sgm), patched with the core's removable hooks.
* Passes: ``process_before_every_sampling`` (1.10+); older 1.x: ``process_batch`` and ``before_hr``.
* Clock: the CFG denoiser's ``step / total_steps`` through ``on_cfg_denoiser``.
* CFG++: the samplers run on a subclass of the WebUI's k-diffusion CFG denoiser that keeps the
  unconditional x0 of every call (``last_denoised_uncond``): the uncond rows of ``x_out`` as
  ``combine_denoised`` receives them -- so AND-prompts, batches, skipped-uncond steps (the WebUI
  substitutes the cond rows there) and edit models (the fully unconditional third) come out
  right -- blended with the init latent like the guided prediction when inpainting. The sampler
  gives it λ as ``cond_scale`` (the CFG scale mapped by the scale-mode setting).

Sampler registration adds to ``sd_samplers.all_samplers`` at script import (before the UI builds
its dropdowns; also under --nowebui), skipping names the WebUI already has (1.10 ships "DDIM
CFG++"). It is idempotent across "Reload UI": ``modules.sd_samplers`` is never reloaded, and our
names are remembered here.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Host, missing_features

if TYPE_CHECKING:
    import torch.nn as nn

    from lib_hidiff import cfgpp
    from lib_hidiff import unet as hd

__all__ = ["HOST", "A1111Host"]

MIN_WEBUI = (1, 10)

# Text that only a WebUI with the features we rely on contains (forks keep the code, not the tags).
FEATURES = {
    ("modules", "scripts.py"): "def process_before_every_sampling",
    ("modules", "sd_samplers_cfg_denoiser.py"): "def combine_denoised",
}


class A1111Host(Host):
    name = "a1111"
    label = "AUTOMATIC1111 WebUI"
    cfgpp_inversion = True

    # WebUI base denoiser class -> (CFG++ denoiser, CFG++ sampler); shared by all instances.
    _classes: ClassVar[dict[type, tuple[type, type]]] = {}

    def __init__(self) -> None:
        self._ours: dict[str, cfgpp.SamplerInfo] = {}  # display name -> info we registered

    # -- detection ---------------------------------------------------------------------------------
    @classmethod
    def detect(cls) -> bool:
        return True  # the fallback: checked last

    @classmethod
    def detect_root(cls, webui_root: str) -> bool:
        return os.path.isfile(os.path.join(webui_root, "modules", "scripts.py"))

    @classmethod
    def install_problems(cls, webui_root: str, torch_version: str | None, tag: str | None) -> list[str]:
        missing = missing_features(webui_root, FEATURES)
        version = _version(tag)
        if missing or (version is not None and version < MIN_WEBUI):
            shown = tag or "unknown version"
            return [
                f"sd-webui-hidiffusion: needs the AUTOMATIC1111 WebUI {MIN_WEBUI[0]}.{MIN_WEBUI[1]} or newer "
                f"(found {shown}); HiDiffusion may not turn on. Update the WebUI (git pull)."
            ]
        return []

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def pass_events(self) -> frozenset[str]:  # type: ignore[override]
        from modules import scripts

        if hasattr(scripts.Script, "process_before_every_sampling"):
            return frozenset({"process_before_every_sampling"})
        return frozenset({"process_batch", "before_hr"})  # WebUI < 1.10

    def connect(self) -> None:
        from modules import script_callbacks

        from .. import generation

        script_callbacks.on_cfg_denoiser(generation.on_cfg_denoiser)
        script_callbacks.on_model_loaded(generation.on_model_loaded)

    # -- HiDiffusion ---------------------------------------------------------------------------------
    def unet(self, sd_model: Any) -> nn.Module | None:
        return getattr(getattr(sd_model, "model", None), "diffusion_model", None)

    def blocking(self, p: Any) -> str | None:
        from .. import conflicts

        return conflicts.blocking(p.sd_model)

    def adjust(
        self, p: Any, settings: hd.HiDiffusionSettings, is_hr: bool
    ) -> tuple[hd.HiDiffusionSettings, list[str]]:
        from .. import conflicts

        return conflicts.adjust(p, settings, is_hr)

    # -- CFG++ samplers -------------------------------------------------------------------------------
    def sampler_classes(self) -> tuple[type, type]:
        """(CFG++ denoiser, CFG++ sampler) built on the WebUI's current k-diffusion classes."""
        from modules import sd_samplers_kdiffusion as K

        base = K.CFGDenoiserKDiffusion
        if base not in self._classes:
            self._classes[base] = _build_classes(K)
        return self._classes[base]

    def builtin_is_usable(self, name: str) -> bool:
        """A sampler of this name is already in the WebUI: keep it instead of registering ours?"""
        return True  # 1.10's "DDIM CFG++" is correct; other names belong to other extensions

    def register_samplers(self, infos: tuple[cfgpp.SamplerInfo, ...]) -> list[str]:
        from modules import sd_samplers, sd_samplers_common
        from modules import sd_samplers_kdiffusion as K

        _, sampler_cls = self.sampler_classes()
        for info in infos:
            name = info.name
            existing = sd_samplers.all_samplers_map.get(name)
            if existing is not None and name not in self._ours:
                if self.builtin_is_usable(name) or info.alt_name is None:
                    continue
                name = info.alt_name  # the host's built-in of this name is wrong: ours beside it
                existing = sd_samplers.all_samplers_map.get(name)
            if info.extra_params:
                K.sampler_extra_params[info.function] = list(info.extra_params)  # keyed by the callable
            data = sd_samplers_common.SamplerData(
                name,
                lambda model, info=info: sampler_cls(info.function, model, dict(info.options)),
                list(info.aliases),
                dict(info.options),
            )
            if existing is not None:  # ours, left from before a reload: replace in place
                sd_samplers.all_samplers[sd_samplers.all_samplers.index(existing)] = data
            else:
                sd_samplers.all_samplers.append(data)
            sd_samplers.all_samplers_map[name] = data  # mutate: other modules hold this dict
            self._ours[name] = info
        _refresh(sd_samplers)
        return list(self._ours)

    def unregister_samplers(self) -> None:
        from modules import sd_samplers
        from modules import sd_samplers_kdiffusion as K

        for name, info in list(self._ours.items()):
            data = sd_samplers.all_samplers_map.pop(name, None)
            if data is not None and data in sd_samplers.all_samplers:
                sd_samplers.all_samplers.remove(data)
            K.sampler_extra_params.pop(info.function, None)
            del self._ours[name]
        _refresh(sd_samplers)

    def registered_samplers(self) -> list[str]:
        return list(self._ours)


def _version(text: str | None) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _refresh(sd_samplers: Any) -> None:
    sd_samplers.set_samplers()
    cache_clear = getattr(getattr(sd_samplers, "get_sampler_and_scheduler", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def _build_classes(K: Any) -> tuple[type, type]:
    from .. import settings
    from ..samplers import INFOTEXT_VARIANT, lambda_for

    base = K.CFGDenoiserKDiffusion

    class CfgppDenoiser(base):
        """The WebUI's CFG denoiser, also exposing the unconditional x0 of each call."""

        def __init__(self, sampler: Any):
            super().__init__(sampler)
            self.last_denoised_uncond = None
            self._uncond_rows = None

        def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
            self._uncond_rows = x_out[-uncond.shape[0] :]
            return super().combine_denoised(x_out, conds_list, uncond, cond_scale)

        def combine_denoised_for_edit_model(self, x_out, cond_scale):
            self._uncond_rows = x_out.chunk(3)[2]
            return super().combine_denoised_for_edit_model(x_out, cond_scale)

        def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
            self.last_denoised_uncond = None  # stays None if a replaced forward skips combine_*
            self._uncond_rows = None
            denoised = super().forward(
                x,
                sigma,
                uncond=uncond,
                cond=cond,
                cond_scale=cond_scale,
                s_min_uncond=s_min_uncond,
                image_cond=image_cond,
            )
            rows, self._uncond_rows = self._uncond_rows, None
            if rows is not None and self.mask is not None and not self.mask_before_denoising:
                rows = self._blend(rows, sigma)
            self.last_denoised_uncond = rows
            return denoised

        def _blend(self, latent, sigma):
            # As the WebUI blends the guided prediction (and lets scripts such as soft inpainting
            # change the blend), so that CFG++ keeps the unmasked region exactly.
            blended = latent * self.nmask + self.init_latent * self.mask
            runner = getattr(self.p, "scripts", None)
            if runner is not None:
                from modules import scripts

                mba = scripts.MaskBlendArgs(
                    latent, self.nmask, self.init_latent, self.mask, blended, denoiser=self, sigma=sigma
                )
                runner.on_mask_blend(self.p, mba)
                blended = mba.blended_latent
            return blended

    class CfgppSampler(K.KDiffusionSampler):
        """A k-diffusion sampler running a CFG++ function on CfgppDenoiser with λ as cond_scale."""

        def __init__(self, funcname: Any, sd_model: Any, options: dict | None = None):
            super().__init__(funcname, sd_model, options)
            if (options or {}).get("default_eta_is_0"):
                # DDIM's η defaults to 0 and follows the DDIM setting, as the WebUI's own DDIM does;
                # the k-diffusion default (η ancestral = 1) would make it stochastic.
                self.eta_option_field, self.eta_infotext_field, self.eta_default = "eta_ddim", "Eta DDIM", 0.0
            self.model_wrap_cfg = CfgppDenoiser(self)
            self.model_wrap = self.model_wrap_cfg.inner_model

        def initialize(self, p: Any) -> dict:
            kwargs = super().initialize(p)
            base = self.funcname
            if "variant" in inspect.signature(base).parameters:
                variant = str(settings.get("cfgpp_dpmpp_2m_variant"))
                self.func = functools.partial(base, variant=variant)
                p.extra_generation_params[INFOTEXT_VARIANT] = variant
            return kwargs

        def launch_sampling(self, steps: int, func: Any) -> Any:
            extra = self.sampler_extra_args
            lam, notes = lambda_for(self.p, extra["cond_scale"])
            extra["cond_scale"] = lam  # the same dict the sampling call reads
            self.p.extra_generation_params.update(notes)
            return super().launch_sampling(steps, func)

    return CfgppDenoiser, CfgppSampler


HOST = A1111Host
