"""HiDiffusion on a ComfyUI MODEL: two ModelPatcher wrappers around the core's removable patches.

The HiDiffusion node clones the MODEL and adds, under one key (comfy/model_patcher.py:937 at
a125cd84; a second HiDiffusion node on the same chain replaces the first):

* an ``OUTER_SAMPLE`` wrapper (run around ``CFGGuider.outer_sample``, comfy/samplers.py:1013-1036):
  it installs the core's inert patches on the diffusion model's modules (``lib_hidiff.unet.install``
  with the ComfyUI targets, :mod:`.targets`) and the ControlNet fitting hooks (:mod:`.control`), runs
  the sampling, and takes every patch off in a ``finally`` -- also after an exception or an
  interrupt (ComfyUI interrupts by raising inside the sampler);
* a ``DIFFUSION_MODEL`` wrapper (run inside ``UNetModel.forward``,
  comfy/ldm/modules/diffusionmodules/openaimodel.py:830-835): for that one call it reads the clock
  (:mod:`.clock`), hands the UNet a copy of its ``control`` dict whose residuals get fitted, opens
  the core's gate, and closes it when the call returns.

So only calls of this MODEL's sampling are patched: a clone without the node shares the same
modules but carries neither wrapper; between calls the hooks are inert, and after the sampling
they are gone. Nothing global (``apply_control``, ``forward_timestep_embed``, attention functions)
is replaced. The MSW-MSA window shifts are seeded with the sampling seed, like on the WebUIs.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

import lib_hidiff.unet as hd

from .clock import ScheduleClock
from .control import ControlFit, copy_control
from .targets import comfy_targets

__all__ = ["KEY", "HiDiffusionWrappers", "diffusion_model_of", "unsupported_reason", "warn_once"]

log = logging.getLogger("hidiffusion")

KEY = "lib_hidiff.hidiffusion"  # the wrapper key on the ModelPatcher

_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def diffusion_model_of(patcher: Any) -> nn.Module | None:
    """The diffusion model a ModelPatcher samples with (object patches included)."""
    get = getattr(patcher, "get_model_object", None)
    if callable(get):
        try:
            return get("diffusion_model")
        except (AttributeError, KeyError):
            return None
    return getattr(getattr(patcher, "model", None), "diffusion_model", None)


def unsupported_reason(unet: nn.Module | None) -> str | None:
    """One line saying why HiDiffusion cannot run on this diffusion model (None: it can)."""
    if unet is None:
        return "HiDiffusion: this MODEL has no diffusion model; sampling without HiDiffusion"
    try:
        hd.inspect_unet(unet)
    except hd.UnsupportedUNet as e:
        return f"HiDiffusion: {type(unet).__name__}: {e}; sampling without HiDiffusion"
    return None


@dataclass
class _Run:
    """One sampling run of a HiDiffusion MODEL on one diffusion model."""

    installation: hd.Installation
    control: ControlFit
    settings: hd.HiDiffusionSettings
    seed: int
    owned: bool  # this run installed the core's patches (and takes them off)
    clock: ScheduleClock = field(default_factory=ScheduleClock)
    depth: int = 1


_RUNS: weakref.WeakKeyDictionary[nn.Module, _Run] = weakref.WeakKeyDictionary()


def _seed(seed: Any) -> int:
    try:
        return int(seed) if seed is not None and not isinstance(seed, bool) else 0
    except (TypeError, ValueError):
        return 0


class HiDiffusionWrappers:
    """The wrappers one HiDiffusion node adds to its MODEL (settings fixed at the node)."""

    def __init__(self, settings: hd.HiDiffusionSettings):
        self.settings = settings

    def attach(self, patcher: Any) -> None:
        import comfy.patcher_extension as pe

        for kind, wrapper in (
            (pe.WrappersMP.OUTER_SAMPLE, self.outer_sample),
            (pe.WrappersMP.DIFFUSION_MODEL, self.diffusion_model),
        ):
            patcher.remove_wrappers_with_key(kind, KEY)
            patcher.add_wrapper_with_key(kind, KEY, wrapper)

    # -- OUTER_SAMPLE: the patches' lifetime -----------------------------------------------------
    def outer_sample(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        guider = executor.class_obj
        unet = diffusion_model_of(getattr(guider, "model_patcher", None))
        run = _RUNS.get(unet) if unet is not None else None
        if run is not None:  # sampling inside sampling on the same modules: the outer run rules
            run.depth += 1
            try:
                return executor(*args, **kwargs)
            finally:
                run.depth -= 1
        reason = unsupported_reason(unet)
        if reason is not None:
            warn_once(reason)
            return executor(*args, **kwargs)
        seed = kwargs.get("seed", args[7] if len(args) > 7 else None)
        run = self._open(unet, seed)
        try:
            return executor(*args, **kwargs)
        finally:
            self._close(unet, run)

    def _open(self, unet: nn.Module, seed: Any) -> _Run:
        layout = hd.inspect_unet(unet)
        before = hd.installed(unet)
        installation = hd.install(unet, layout, targets=comfy_targets(unet, layout))
        owned = installation is not before
        try:
            control = ControlFit(unet)  # after the core's hooks: sees the pooled maps
        except BaseException:
            if owned:
                installation.remove()
            raise
        run = _Run(installation, control, self.settings, _seed(seed), owned)
        _RUNS[unet] = run
        return run

    @staticmethod
    def _close(unet: nn.Module, run: _Run) -> None:
        try:
            run.control.remove()
            run.installation.deactivate()
            if run.owned:
                run.installation.remove()
        finally:
            if _RUNS.get(unet) is run:
                del _RUNS[unet]

    # -- DIFFUSION_MODEL: the gate for one call ---------------------------------------------------
    def diffusion_model(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        run = _RUNS.get(executor.class_obj)
        if run is None:  # not a diffusion model of one of our runs (e.g. a ControlNet's)
            return executor(*args, **kwargs)
        args, kwargs, options, control = _call_parts(args, kwargs)
        if run.clock.read(options) is None:
            timesteps = kwargs.get("timesteps", args[1] if len(args) > 1 else None)
            run.clock.value = _fraction_from_timestep(timesteps)
            warn_once(
                "HiDiffusion: the sampler gave no schedule (transformer_options['sample_sigmas']); "
                "timing RAU-Net / MSW-MSA by the model's timestep instead"
            )
        run.control.control = control
        try:
            run.installation.activate(run.settings, progress=run.clock, seed=run.seed)
            return executor(*args, **kwargs)
        finally:
            run.installation.deactivate()
            run.control.control = None


# UNetModel._forward(x, timesteps, context, y, control, transformer_options, **kwargs)
_CONTROL_POS, _OPTIONS_POS = 4, 5


def _call_parts(args: tuple, kwargs: dict) -> tuple[tuple, dict, dict, Any]:
    """The call with a copy of its control dict, its transformer_options, and that copy."""
    args = tuple(args)
    if "control" in kwargs:
        control = copy_control(kwargs["control"])
        kwargs = {**kwargs, "control": control}
    elif len(args) > _CONTROL_POS:
        control = copy_control(args[_CONTROL_POS])
        args = (*args[:_CONTROL_POS], control, *args[_CONTROL_POS + 1 :])
    else:
        control = None
    options = kwargs.get("transformer_options", args[_OPTIONS_POS] if len(args) > _OPTIONS_POS else None)
    return (
        args,
        kwargs,
        options if isinstance(options, dict) else {},
        control if isinstance(control, dict) else None,
    )


def _fraction_from_timestep(timesteps: Any) -> float:
    """Progress in [0, 1] from a discrete-time model's timestep (999 = pure noise)."""
    try:
        import torch

        t = float(torch.as_tensor(timesteps).detach().flatten().max())
    except (TypeError, ValueError, RuntimeError):
        return 0.0
    return min(max(1.0 - t / 999.0, 0.0), 1.0)
