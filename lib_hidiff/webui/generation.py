"""HiDiffusion during one WebUI generation: when it is on, on which UNet, with which clock.

Shared by every host; what differs per host comes from ``hosts.current()``. Lifecycle (each step
is safe to repeat and starts by closing whatever was left open):

* ``process``: parse and validate the arguments (UI, API, XYZ ``p.hidiff_*``), write infotext,
  put a ``finally`` around ``p.sample``.
* ``pass_event`` -> ``open_pass`` (A1111: ``process_before_every_sampling``, base pass and hires
  pass): look at the model loaded *now*, check conflicts, install the gated patches, open the gate.
* the clock: by default the CFG denoiser's ``step / total_steps`` (``on_cfg_denoiser``, which also
  closes the gate when the model changed under us, e.g. the refiner took over); a host without a
  CFG denoiser passes its own ``progress`` to ``open_pass``.
* a model load (the refiner, a checkpoint switch) closes it; the ``p.sample`` guard,
  ``postprocess``, the next ``process`` and script unload also take the patches off again, so
  between generations -- and after an exception -- the UNet carries nothing of ours.

The only state is the one open activation and the UNets this module patched (a WebUI runs one
generation at a time).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lib_hidiff.unet as hd

from . import hosts, infotext, messages, schedule
from .args import ArgsError, ScriptArgs, parse_args, xyz_overrides
from .messages import note

__all__ = [
    "Activation",
    "before_sampling",
    "current",
    "deactivate",
    "on_cfg_denoiser",
    "on_model_loaded",
    "on_unload",
    "open_pass",
    "pass_event",
    "postprocess",
    "process",
    "release",
]

log = logging.getLogger("hidiffusion")

P_ARGS = "_hidiffusion"  # the parsed ScriptArgs of this generation (None = off)


@dataclass
class Activation:
    """The open gate: which installation, on which model, and the sampler it follows."""

    installation: hd.Installation
    model: Any  # weakref to the WebUI model object the gate was opened for
    checkpoint: Any
    is_hr: bool
    clock: Any = None  # the CFG denoiser of this pass, or (step, total) from an older WebUI
    source: Callable[[], Any] | None = None  # a host's own clock (no CFG denoiser there)
    # Runs once, at the pass's first real clock reading: (reading, sampler steps or None).
    on_first_reading: Callable[[Any, int | None], None] | None = None

    def progress(self) -> Any:
        if self.source is not None:
            value = self.source()
        elif self.clock is None:
            return (0, 1)  # no clock yet: not a reading of this pass's schedule
        elif isinstance(self.clock, tuple):
            value = self.clock
        else:
            value = (int(self.clock.step), max(int(self.clock.total_steps or 1), 1))
        if self.on_first_reading is not None:
            first, self.on_first_reading = self.on_first_reading, None
            first(value, getattr(self.clock, "steps", None))
        return value


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
    messages.reset(p)
    infotext.remove(p.extra_generation_params)
    try:
        parsed = parse_args(args, xyz_overrides(p))
        if parsed.enabled:
            parsed.settings()  # surfaces a bad combination now, not in the middle of sampling
    except ArgsError as e:
        note(p, f"{e}; generating without HiDiffusion")
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
def pass_event(p: Any, event: str) -> Activation | None:
    """A script hook ran (``process_before_every_sampling``, ``process_batch``, ``before_hr``):
    open a pass if this host starts its sampling passes there."""
    if event in hosts.current().pass_events:
        return open_pass(p)
    return None


def before_sampling(p: Any) -> Activation | None:
    """Before a sampling pass (A1111: ``process_before_every_sampling``)."""
    return open_pass(p)


def open_pass(
    p: Any, *, is_hr: bool | None = None, progress: Callable[[], Any] | None = None
) -> Activation | None:
    """Open the gate on the UNet loaded now for one sampling pass, or explain why not.

    ``progress``: the host's clock (see ``hd.apply_hidiffusion``); by default the CFG denoiser's.
    """
    global _current
    deactivate()
    parsed: ScriptArgs | None = getattr(p, P_ARGS, None)
    if parsed is None:
        return None
    host = hosts.current()
    is_hr = host.is_hires_pass(p) if is_hr is None else is_hr
    settings = parsed.settings()
    if is_hr:
        if parsed.hires == "off":
            return None
        if parsed.hires == "MSW-MSA only":
            settings = settings.replace(raunet=False)

    sd_model = p.sd_model
    reason = host.blocking(p)
    unet = host.unet(sd_model) if reason is None else None
    if reason is None and unet is None:
        reason = f"HiDiffusion: this {host.label} model has no UNet; generating without HiDiffusion"
    layout = None
    if reason is None:
        try:
            layout = host.layout(sd_model, unet)
        except hd.UnsupportedUNet as e:
            reason = f"HiDiffusion: {e}; generating without HiDiffusion"
    if reason is not None:
        note(p, reason)
        if not is_hr:
            infotext.remove(p.extra_generation_params)
        return None

    settings, messages = host.adjust(p, settings, is_hr)
    for message in messages:
        note(p, message)
    if messages and not is_hr:  # what the host turned off is what ran
        p.extra_generation_params[infotext.KEYS["mswmsa"]] = settings.mswmsa
        p.extra_generation_params[infotext.KEYS["raunet"]] = settings.raunet
    if not (settings.raunet or settings.mswmsa):
        return None

    try:
        if hd.installed(unet) is None:
            _patched.append(weakref.ref(unet))
        installation = hd.install(unet, layout)
        act = Activation(installation, weakref.ref(sd_model), host.checkpoint(sd_model), is_hr, source=progress)
        act.on_first_reading = _schedule_check(p, layout, settings, is_hr)
        installation.activate(settings, progress=act.progress, seed=_seed(p))
    except (hd.SettingsError, hd.UnsupportedUNet) as e:
        note(p, f"{e}; generating without HiDiffusion")
        if not is_hr:
            infotext.remove(p.extra_generation_params)
        return None
    _current = act
    return act


def _pass_size(p: Any, is_hr: bool) -> tuple[int, int]:
    """(width, height) in pixels of the pass: the hires pass samples at ``hr_upscale_to_x/y``."""
    if is_hr:
        scale = float(getattr(p, "hr_scale", 1.0) or 1.0)
        return (
            int(getattr(p, "hr_upscale_to_x", 0) or p.width * scale),
            int(getattr(p, "hr_upscale_to_y", 0) or p.height * scale),
        )
    return int(p.width), int(p.height)


def _schedule_check(p: Any, layout: hd.UNetLayout, settings: hd.HiDiffusionSettings, is_hr: bool) -> Callable:
    """The pass's check at its first clock reading, when the clock's step count is known exactly:
    warn once per generation when an enabled part runs on no step, and record the effective
    windows in the infotext when they differ from what the settings imply."""
    p_ref = weakref.ref(p)

    def check(reading: Any, steps: int | None) -> None:
        p = p_ref()
        if p is None or not isinstance(reading, tuple):
            return  # a fraction clock has no step count to check
        try:
            width, height = _pass_size(p, is_hr)
            total = int(reading[1])
            sched = schedule.pass_schedule(layout, width, height, settings, steps or total, total, hires=is_hr)
        except Exception as e:  # a report must never break sampling
            log.warning("HiDiffusion: could not check the schedule of this pass: %s", e)
            return
        for line in sched.warnings():
            note(p, f"HiDiffusion: {line}")
        record = sched.record()
        if record is not None:
            infotext.write_schedule(p.extra_generation_params, record, hires=is_hr)

    return check


def on_cfg_denoiser(params: Any) -> None:
    """Every CFG denoiser call (A1111-family hosts): remember the sampler's clock; close the gate if
    the model changed."""
    act = _current
    if act is None:
        return
    from modules import shared

    model = shared.sd_model
    if act.model() is not model or hosts.current().checkpoint(model) != act.checkpoint:
        deactivate()  # the refiner (another checkpoint) runs untouched
        return
    denoiser = getattr(params, "denoiser", None)
    if denoiser is not None and getattr(denoiser, "total_steps", None):
        act.clock = denoiser
    else:  # WebUI < 1.8: the shared state's step, one behind the denoiser's
        act.clock = (int(params.sampling_step), max(int(params.total_sampling_steps or 1), 1))
    if act.on_first_reading is not None:
        act.progress()  # the pass's first reading: check its schedule here, outside the UNet call


def postprocess(p: Any) -> None:
    release()


def on_model_loaded(sd_model: Any) -> None:
    """A model was (re)loaded -- a refiner or a checkpoint switch: whatever was open is stale."""
    deactivate()


def on_unload() -> None:
    """Script unload ("Reload UI"): take every patch off; the reloaded script starts clean."""
    release()
    hd.uninstall_all()
