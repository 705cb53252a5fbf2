"""HiDiffusion during one WebUI generation: when it is on, on which UNet, with which clock.

Lifecycle (each step is safe to repeat and starts by closing whatever was left open):

* ``process``: parse and validate the arguments (UI, API, XYZ ``p.hidiff_*``), write infotext,
  put a ``finally`` around ``p.sample``.
* ``before_sampling`` (``process_before_every_sampling``: base pass and hires pass): look at the
  model loaded *now*, check conflicts, install the gated patches and open the gate.
* ``on_cfg_denoiser``: the clock is the CFG denoiser's ``step / total_steps``; if the model changed
  under us (the refiner took over), close the gate.
* a model load (the refiner, a checkpoint switch) closes it; the ``p.sample`` guard,
  ``postprocess``, the next ``process`` and script unload also take the patches off again, so
  between generations -- and after an exception -- the UNet carries nothing of ours.

The only state is the one open activation and the UNets this module patched (the WebUI runs one
generation at a time).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

import lib_hidiff.unet as hd

from . import conflicts, infotext
from .args import ArgsError, ScriptArgs, parse_args, xyz_overrides

__all__ = [
    "before_sampling",
    "current",
    "deactivate",
    "layout_for",
    "on_cfg_denoiser",
    "on_model_loaded",
    "on_unload",
    "postprocess",
    "process",
    "release",
]

log = logging.getLogger("hidiffusion")

P_ARGS = "_hidiffusion"  # the parsed ScriptArgs of this generation (None = off)
P_NOTES = "_hidiffusion_notes"  # messages already shown for this generation


@dataclass
class Activation:
    """The open gate: which installation, on which model, and the sampler it follows."""

    installation: hd.Installation
    model: Any  # weakref to the WebUI model object the gate was opened for
    checkpoint: Any
    is_hr: bool
    clock: Any = None  # the CFG denoiser of this pass, or (step, total) from an older WebUI

    def progress(self) -> tuple[int, int]:
        clock = self.clock
        if clock is None:
            return (0, 1)
        if isinstance(clock, tuple):
            return clock
        return (int(clock.step), max(int(clock.total_steps or 1), 1))


_current: Activation | None = None
_patched: list[weakref.ref] = []  # UNets we installed the patches on during this generation


def current() -> Activation | None:
    return _current


def deactivate() -> None:
    """Close the gate (the patches stay installed, inert, until ``release``)."""
    global _current
    act, _current = _current, None
    if act is not None:
        act.installation.deactivate()


def release() -> None:
    """Close the gate and take off every patch this generation installed."""
    deactivate()
    while _patched:
        unet = _patched.pop()()
        if unet is not None:
            hd.uninstall(unet)


def _note(p: Any, message: str) -> None:
    """Show a message once per generation: the console and the generation info under the image."""
    notes = getattr(p, P_NOTES, None)
    if notes is None:
        notes = set()
        setattr(p, P_NOTES, notes)
    if message in notes:
        return
    notes.add(message)
    log.warning(message)
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(message)


def _checkpoint_id(sd_model: Any) -> Any:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    return getattr(info, "filename", info)


def _seed(p: Any) -> int:
    for name in ("seeds", "all_seeds"):
        seeds = getattr(p, name, None)
        if seeds:
            return int(seeds[0])
    return int(getattr(p, "seed", 0) or 0)


# -- process ------------------------------------------------------------------------------------
def process(p: Any, args: Any) -> ScriptArgs | None:
    """Start of a generation (and of every XYZ cell): reset, validate, record."""
    release()
    setattr(p, P_ARGS, None)
    setattr(p, P_NOTES, set())
    infotext.remove(p.extra_generation_params)
    try:
        parsed = parse_args(args, xyz_overrides(p))
        if parsed.enabled:
            parsed.settings()  # surfaces a bad combination now, not in the middle of sampling
    except ArgsError as e:
        _note(p, f"{e}; generating without HiDiffusion")
        return None
    if not parsed.enabled:
        return parsed
    setattr(p, P_ARGS, parsed)
    infotext.write(p.extra_generation_params, parsed, hires=bool(getattr(p, "enable_hr", False)))
    _guard_sample(p)
    return parsed


class _SampleGuard:
    """``p.sample`` with a ``finally`` that closes the gate however sampling ends."""

    def __init__(self, p: Any, inner: Any):
        self.p = weakref.ref(p)
        self.inner = inner  # None: the class's own sample method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.inner is not None:
                return self.inner(*args, **kwargs)
            p = self.p()
            return type(p).sample(p, *args, **kwargs)
        finally:
            release()


def _guard_sample(p: Any) -> None:
    own = p.__dict__.get("sample")
    if isinstance(own, _SampleGuard):
        if own.p() is p:
            return
        inner = own.inner  # copied from another p by XYZ's copy(p): rebind to this one
        if inner is not None and getattr(inner, "__self__", None) is own.p():
            inner = inner.__func__.__get__(p)
    else:
        inner = own  # another extension's wrapper (ControlNet does this), or None
    p.sample = _SampleGuard(p, inner)


# -- sampling -----------------------------------------------------------------------------------
def layout_for(sd_model: Any, unet: Any) -> hd.UNetLayout:
    """The UNet's layout with the native size of this model (raises hd.UnsupportedUNet)."""
    layout = hd.inspect_unet(unet)
    if layout.family == "sd2" and getattr(sd_model, "parameterization", "eps") == "v":
        layout = layout.with_native(96)  # SD 2.x 768-v models are native at 768 px
    return layout


def before_sampling(p: Any) -> Activation | None:
    """Before each sampling pass: open the gate on the UNet loaded now, or explain why not."""
    global _current
    deactivate()
    parsed: ScriptArgs | None = getattr(p, P_ARGS, None)
    if parsed is None:
        return None
    is_hr = bool(getattr(p, "is_hr_pass", False))
    settings = parsed.settings()
    if is_hr:
        if parsed.hires == "off":
            return None
        if parsed.hires == "MSW-MSA only":
            settings = settings.replace(raunet=False)

    sd_model = p.sd_model
    reason = conflicts.blocking(sd_model)
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    if reason is None and unet is None:
        reason = "HiDiffusion: the model has no UNet (model.diffusion_model); generating without HiDiffusion"
    layout = None
    if reason is None:
        try:
            layout = layout_for(sd_model, unet)
        except hd.UnsupportedUNet as e:
            reason = f"HiDiffusion: {e}; generating without HiDiffusion"
    if reason is not None:
        _note(p, reason)
        if not is_hr:
            infotext.remove(p.extra_generation_params)
        return None

    settings, messages = conflicts.adjust(p, settings, is_hr)
    for message in messages:
        _note(p, message)
    if messages and not is_hr:
        p.extra_generation_params[infotext.KEYS["mswmsa"]] = settings.mswmsa
    if not (settings.raunet or settings.mswmsa):
        return None

    try:
        if hd.installed(unet) is None:
            _patched.append(weakref.ref(unet))
        installation = hd.install(unet, layout)
        act = Activation(installation, weakref.ref(sd_model), _checkpoint_id(sd_model), is_hr)
        installation.activate(settings, progress=act.progress, seed=_seed(p))
    except (hd.SettingsError, hd.UnsupportedUNet) as e:
        _note(p, f"{e}; generating without HiDiffusion")
        if not is_hr:
            infotext.remove(p.extra_generation_params)
        return None
    _current = act
    return act


def on_cfg_denoiser(params: Any) -> None:
    """Every CFG denoiser call: remember the sampler's clock; close the gate if the model changed."""
    act = _current
    if act is None:
        return
    from modules import shared

    model = shared.sd_model
    if act.model() is not model or _checkpoint_id(model) != act.checkpoint:
        deactivate()  # the refiner (another checkpoint) runs untouched
        return
    denoiser = getattr(params, "denoiser", None)
    if denoiser is not None and getattr(denoiser, "total_steps", None):
        act.clock = denoiser
    else:  # WebUI < 1.8: the shared state's step, one behind the denoiser's
        act.clock = (int(params.sampling_step), max(int(params.total_sampling_steps or 1), 1))


def postprocess(p: Any) -> None:
    release()


def on_model_loaded(sd_model: Any) -> None:
    """A model was (re)loaded -- a refiner or a checkpoint switch: whatever was open is stale."""
    deactivate()


def on_unload() -> None:
    """Script unload ("Reload UI"): take every patch off; the reloaded script starts clean."""
    release()
    hd.uninstall_all()
