"""CFG++ samplers in the WebUI's sampler list, and the CFG denoiser that feeds them.

Registration adds ``lib_hidiff.cfgpp.SAMPLERS`` to ``sd_samplers.all_samplers`` at script import
(before the UI builds its dropdowns; also under --nowebui), skipping names the WebUI already has
(1.10 ships "DDIM CFG++"). It is idempotent across "Reload UI": the list survives reloads because
``modules.sd_samplers`` is never reloaded, and our names are remembered here.

Each CFG++ sampler runs on :class:`CfgppDenoiser`, a subclass of the WebUI's k-diffusion CFG
denoiser that keeps the unconditional x0 of every call (``last_denoised_uncond``): the uncond rows
of ``x_out`` as ``combine_denoised`` receives them -- so AND-prompts, batches, skipped-uncond steps
(the WebUI substitutes the cond rows there) and edit models (the fully unconditional third) come
out right -- blended with the init latent like the guided prediction when inpainting. The sampler
gives it λ as ``cond_scale`` (CFG scale mapped by the scale-mode setting).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from typing import Any

from lib_hidiff import cfgpp

from . import settings

__all__ = [
    "foreign_name",
    "lambda_for",
    "on_infotext_pasted",
    "register",
    "registered",
    "remove_infotext",
    "unregister",
]

log = logging.getLogger("hidiffusion")

INFOTEXT_SCALE = "CFGpp scale"  # no "+" in keys: the WebUI's infotext parser drops it
INFOTEXT_MODE = settings.INFOTEXT["cfgpp_scale_mode"]
INFOTEXT_VARIANT = settings.INFOTEXT["cfgpp_dpmpp_2m_variant"]
INFOTEXT_HIRES = settings.INFOTEXT["cfgpp_hires_scale"]
INFOTEXT_KEYS = (INFOTEXT_SCALE, INFOTEXT_MODE, INFOTEXT_VARIANT, INFOTEXT_HIRES)

_OURS: dict[str, cfgpp.SamplerInfo] = {}  # display name -> info of every sampler we registered
_CLASSES: dict[type, tuple[type, type]] = {}  # WebUI base denoiser class -> (denoiser, sampler)


# -- λ ------------------------------------------------------------------------------------------
def lambda_for(p: Any, cfg_scale: float) -> tuple[float, dict[str, Any]]:
    """λ for this pass and the infotext entries that record it."""
    mode = settings.get("cfgpp_scale_mode")
    hires_scale = float(settings.get("cfgpp_hires_scale") or 0.0)
    if getattr(p, "is_hr_pass", False) and hires_scale > 0:
        return hires_scale, {INFOTEXT_HIRES: hires_scale}
    lam = cfgpp.lambda_from_cfg(cfg_scale, mode)
    return lam, {INFOTEXT_SCALE: round(lam, 4), INFOTEXT_MODE: mode}


def remove_infotext(params: dict[str, Any]) -> None:
    """Drop the CFG++ keys (XYZ cells share one dict; a cell with another sampler must not keep them)."""
    for key in INFOTEXT_KEYS:
        params.pop(key, None)


# -- the denoiser and the sampler ---------------------------------------------------------------
def _classes() -> tuple[type, type]:
    from modules import sd_samplers_kdiffusion as K

    base = K.CFGDenoiserKDiffusion
    if base in _CLASSES:
        return _CLASSES[base]

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

    _CLASSES[base] = (CfgppDenoiser, CfgppSampler)
    return _CLASSES[base]


# -- registration -------------------------------------------------------------------------------
def _refresh(sd_samplers: Any) -> None:
    sd_samplers.set_samplers()
    cache_clear = getattr(getattr(sd_samplers, "get_sampler_and_scheduler", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def register() -> list[str]:
    """Add the CFG++ samplers the WebUI lacks; returns the names now provided by us."""
    from modules import sd_samplers, sd_samplers_common
    from modules import sd_samplers_kdiffusion as K

    _, sampler_cls = _classes()
    for info in cfgpp.SAMPLERS:
        existing = sd_samplers.all_samplers_map.get(info.name)
        if existing is not None and info.name not in _OURS:
            continue  # built in (1.10's "DDIM CFG++") or another extension's
        if info.extra_params:
            K.sampler_extra_params[info.function] = list(info.extra_params)  # keyed by the callable
        data = sd_samplers_common.SamplerData(
            info.name,
            lambda model, info=info: sampler_cls(info.function, model, dict(info.options)),
            list(info.aliases),
            dict(info.options),
        )
        if existing is not None:  # ours, left from before a reload: replace in place
            sd_samplers.all_samplers[sd_samplers.all_samplers.index(existing)] = data
        else:
            sd_samplers.all_samplers.append(data)
        sd_samplers.all_samplers_map[info.name] = data  # mutate: other modules hold this dict
        _OURS[info.name] = info
    _refresh(sd_samplers)
    return list(_OURS)


def unregister() -> None:
    """Take our samplers out again (script unload; registration runs anew on reload)."""
    from modules import sd_samplers
    from modules import sd_samplers_kdiffusion as K

    for name, info in list(_OURS.items()):
        data = sd_samplers.all_samplers_map.get(name)
        if data is not None:
            sd_samplers.all_samplers_map.pop(name, None)
            if data in sd_samplers.all_samplers:
                sd_samplers.all_samplers.remove(data)
        K.sampler_extra_params.pop(info.function, None)
        del _OURS[name]
    _refresh(sd_samplers)


def registered() -> list[str]:
    return list(_OURS)


# -- infotext from other UIs --------------------------------------------------------------------
def _normalize(name: str) -> str:
    s = str(name).strip().lower().replace("_", " ")
    s = re.sub(r"\bcfg ?pp\b|\bcfg\+\+", "cfg++", s)
    s = re.sub(r"\bdpmpp\b", "dpm++", s)
    s = re.sub(r"^k ", "", s)
    s = re.sub(r"\bancestral\b", "a", s)
    return re.sub(r"\s+", " ", s).strip()


def _spellings() -> dict[str, str]:
    table = {}
    for info in cfgpp.SAMPLERS:
        for spelling in (info.name, info.key, *info.aliases):
            table.setdefault(_normalize(spelling), info.name)
    return table


def foreign_name(name: str | None, available: Any, suffixes: Any = ()) -> str | None:
    """Our display name for a reForge / ComfyUI spelling of a CFG++ sampler, or None.

    ``available``: the WebUI's sampler names (a name already among them is left alone, and only
    names among them are mapped to); ``suffixes``: schedule labels that may trail the name
    ("Euler Ancestral CFG++ Karras").
    """
    if not name or name in available:
        return None
    table = _spellings()
    for suffix in ("", *suffixes):
        if suffix and not name.endswith(" " + suffix):
            continue
        base = table.get(_normalize(name[: -len(suffix) - 1] if suffix else name))
        if base is not None and base in available:
            return f"{base} {suffix}" if suffix else base
    return None


def on_infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    """Map foreign CFG++ sampler spellings to ours; their λ is the raw CFG value."""
    from modules import sd_samplers

    available = set(sd_samplers.all_samplers_map)
    try:
        from modules import sd_schedulers

        suffixes = [s for x in sd_schedulers.schedulers for s in (x.label, x.name, *(x.aliases or []))]
    except ImportError:
        suffixes = []
    mapped = False
    for key in ("Sampler", "Hires sampler"):
        ours = foreign_name(params.get(key), available, suffixes)
        if ours is not None:
            params[key] = ours
            mapped = True
    if mapped and INFOTEXT_MODE not in params:
        params[INFOTEXT_MODE] = "raw"  # reForge / ComfyUI pass the CFG value as λ
