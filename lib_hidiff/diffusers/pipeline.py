"""Turn CFG++ and HiDiffusion on for a stock diffusers pipeline, and take them off again.

    with cfgpp(pipe, sampler="euler", scale=0.6):      # guidance_scale > 1 still required
        image = pipe(prompt, guidance_scale=7.5).images[0]
    with hidiffusion(pipe, seed=0):
        image = pipe(prompt, height=2048, width=2048).images[0]

`attach_cfgpp` / `attach_hidiffusion` do the same without a `with` and return an undo callable
(for hosts that switch features on and off around their own passes). Nothing is changed before all
checks pass; undo puts back the exact scheduler object and leaves no hook on the UNet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .capture import UNetOutputCapture
from .clock import SchedulerClock

__all__ = ["attach_cfgpp", "attach_hidiffusion", "cfgpp", "hidiffusion", "native_latent_size"]


def _unet_of(pipe: Any, feature: str) -> Any:
    unet = getattr(pipe, "unet", None)
    if unet is None or not hasattr(unet, "register_forward_hook"):
        raise ValueError(
            f"{feature} needs a diffusers pipeline with a UNet (pipe.unet); got {type(pipe).__name__}"
        )
    return unet


def attach_cfgpp(
    pipe: Any, sampler: str = "euler", scale: float = 0.6, **overrides: Any
) -> Callable[[], None]:
    """Swap in a CFG++ scheduler built from `pipe.scheduler.config` and hook `pipe.unet`.

    Returns undo(): the original scheduler object back on the pipeline, the hook off (idempotent).
    `overrides` are config keys for the CFG++ scheduler (e.g. cfgpp_variant="B").
    """
    from .registry import make_cfgpp_scheduler

    unet = _unet_of(pipe, "CFG++")
    original = pipe.scheduler
    # Built (and validated) before anything on the pipeline changes.
    scheduler = make_cfgpp_scheduler(original.config, sampler, scale, **overrides)
    capture = UNetOutputCapture().attach(unet)
    scheduler.cfgpp_capture = capture
    pipe.scheduler = scheduler

    def undo() -> None:
        capture.detach()
        scheduler.cfgpp_capture = None
        if pipe.scheduler is scheduler:
            pipe.scheduler = original

    return undo


@contextlib.contextmanager
def cfgpp(pipe: Any, sampler: str = "euler", scale: float = 0.6, **overrides: Any) -> Iterator[Any]:
    """Sample `pipe` with CFG++ inside the `with` (yields the CFG++ scheduler).

    sampler: "euler", "euler_a", "ddim" or "dpmpp_2m" (also the lib_hidiff.cfgpp keys and display
    names). scale: λ, usually 0 to 1 (not the CFG scale). The pipeline must still run its
    unconditional pass, i.e. be called with guidance_scale > 1 (its value is otherwise unused);
    without it each step is the base scheduler's, with one warning per run.
    """
    undo = attach_cfgpp(pipe, sampler, scale, **overrides)
    try:
        yield pipe.scheduler
    finally:
        undo()


def native_latent_size(pipe: Any, layout: Any) -> int | None:
    """The latent size the model was trained at when the UNet layout alone cannot tell.

    SD 2.x 768-v models share SD 2.x-base's UNet layout; they are the v-prediction ones, native at
    768 px (latent 96). A UNet config with sample_size 96 says the same.
    """
    if getattr(layout, "family", None) != "sd2":
        return None
    config = getattr(getattr(pipe, "scheduler", None), "config", {}) or {}
    prediction = config.get("prediction_type", "epsilon") if hasattr(config, "get") else "epsilon"
    sample_size = getattr(getattr(pipe.unet, "config", None), "sample_size", None)
    if sample_size == 96 or (prediction == "v_prediction" and sample_size in (None, 64, 96)):
        return 96
    return None


def attach_hidiffusion(
    pipe: Any, settings: Any = None, seed: int = 0, *, native: int | None = None
) -> Callable[[], None]:
    """Turn HiDiffusion on for `pipe.unet` with the pipeline's scheduler as the clock; returns undo()."""
    stack = contextlib.ExitStack()
    stack.enter_context(hidiffusion(pipe, settings, seed, native=native))
    return stack.close


@contextlib.contextmanager
def hidiffusion(
    pipe: Any, settings: Any = None, seed: int = 0, *, native: int | None = None
) -> Iterator[Any]:
    """Run lib_hidiff's HiDiffusion on `pipe.unet` inside the `with` (yields the Installation).

    Works for SD 1.x / 2.x / SDXL pipelines whose UNet is a diffusers UNet2DConditionModel
    (txt2img, img2img, inpaint, ControlNet). The clock is the pipeline's own scheduler (see
    SchedulerClock), so the official step thresholds apply to the steps the pipeline runs.
    `settings` is a lib_hidiff.HiDiffusionSettings (None: defaults). `native` is the latent side
    the model was trained at, where the UNet family's default is wrong (e.g. 64 for a 512 px
    SDXL-Turbo); SD 2.x 768-v models are recognised (native_latent_size). Raises
    UnsupportedUNet / SettingsError / ValueError before anything is changed.
    """
    from lib_hidiff.unet import apply_hidiffusion, inspect_unet

    unet = _unet_of(pipe, "HiDiffusion")
    layout = inspect_unet(unet)
    if native is None:
        native = native_latent_size(pipe, layout)
    elif isinstance(native, bool) or not isinstance(native, int) or native < 8:
        raise ValueError(f"HiDiffusion 'native' must be an integer latent side >= 8 or None; got {native!r}")
    if native is not None:
        layout = layout.with_native(native)
    clock = SchedulerClock(pipe).attach(unet)
    try:
        with apply_hidiffusion(unet, settings, progress=clock, seed=seed, layout=layout) as installation:
            yield installation
    finally:
        clock.detach()
