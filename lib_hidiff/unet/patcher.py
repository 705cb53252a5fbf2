"""Install, gate and remove HiDiffusion on one UNet.

Everything sits on small modules: forward hooks on a few blocks, instance ``forward`` overrides on
the RAD Downsample and the Upsamples, pre/post hooks around ``attn1``. The UNet's own forward is
never touched, so a ControlNet-style loop that calls the blocks directly is patched all the same.
ControlNet residuals handed to the UNet as arguments (diffusers' down/mid residuals, the ``control``
dict of Forge's UNet) are fitted to the maps RAU-Net leaves (targets.ControlNetSinks / ControlDictSinks).
Which modules those are, and the argument names their calls use, come from
:func:`.targets.targets_for`: one patcher serves ldm/sgm and diffusers UNets.

One gate rules all patches: ``Installation.session`` (None = off). Each UNet call starts at the
entry module (ldm ``input_blocks[0]``, diffusers ``conv_in``), where the session turns the clock,
the latent size and the settings into a :class:`CallPlan`; every other patch only reads that plan.
With no session, each patch returns at its first line.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .control_dict import copy_control, fit_input_block, fit_middle_block
from .layout import UNetLayout, inspect_unet
from .mswmsa import Windowing, plan_windows, shift_for, window_partition, window_reverse
from .presets import HiDiffusionSettings, SettingsError, row_for
from .raunet import ca_pool, rad_conv, resize, upsample_to
from .targets import ControlDictSinks, ControlNetSinks, UNetTargets, targets_for

__all__ = [
    "CallPlan",
    "Clock",
    "Installation",
    "apply_hidiffusion",
    "install",
    "installed",
    "uninstall",
    "uninstall_all",
]

log = logging.getLogger("hidiffusion")

# What ``progress()`` returns: a fraction of the sampling schedule in [0, 1], or (step, total) --
# the exact form, which gives the official integer rule int(total*ratio).
Clock = float | tuple[int, int]

_REGISTRY: weakref.WeakKeyDictionary[nn.Module, Installation] = weakref.WeakKeyDictionary()
_MISSING = object()


def in_window(clock: Clock, window: tuple[float, float]) -> bool:
    """Is this step inside [start, end)? Official rule for (step, total): int(N*start) <= i < int(N*end)."""
    start, end = window
    if start <= 0.0 and end >= 1.0:  # the whole schedule, the last step included
        return True
    if isinstance(clock, tuple):
        step, total = clock
        return int(total * start) <= step < int(total * end)
    return start <= clock < end


def _read_clock(progress: Callable[[], Any]) -> Clock:
    value = progress()
    if isinstance(value, (tuple, list)):
        step, total = int(value[0]), int(value[1])
        return (step, max(total, 1))
    return min(max(float(value), 0.0), 1.0)


def _step_key(clock: Clock) -> int:
    return clock[0] if isinstance(clock, tuple) else int(round(clock * 1_000_000))


@dataclass
class CallPlan:
    """What HiDiffusion does during one UNet call (built at input_blocks[0])."""

    latent_hw: tuple[int, int]
    rad_on: bool
    ca_on: bool
    msw_on: bool
    step_key: int
    skip_hw: dict[int, tuple[int, int]] = field(default_factory=dict)
    ca_size: tuple[int, int] | None = None
    st_hw: tuple[int, int] | None = None
    windows: list[tuple[nn.Module, Windowing | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Session:
    """One generation's activation: settings, clock and seed."""

    settings: HiDiffusionSettings
    progress: Callable[[], Any]
    seed: int

    def plan(self, layout: UNetLayout, latent_hw: tuple[int, int], timestep: float | None) -> CallPlan:
        s = self.settings
        clock = _read_clock(self.progress)
        if s.time_mode == "sigma":
            if timestep is None:
                _warn_once(
                    "HiDiffusion: time mode 'sigma' needs the UNet's timestep; using the step fraction"
                )
                where: Clock = clock if not isinstance(clock, tuple) else clock[0] / clock[1]
            else:
                where = min(max(1.0 - timestep / 999.0, 0.0), 1.0)
        else:
            where = clock
        row = row_for(s.preset, layout.family, latent_hw)
        windows = s.windows(row, inpainting=layout.inpainting)
        return CallPlan(
            latent_hw=latent_hw,
            rad_on=s.raunet and in_window(where, windows["rad"]),
            ca_on=s.raunet and in_window(where, windows["ca"]),
            msw_on=s.mswmsa and in_window(where, (s.msw_start, s.msw_end)),
            step_key=_step_key(clock),
        )

    def shift(self, step_key: int, block: int) -> int:
        k = self.settings.msw_shift
        return shift_for(self.seed, step_key, block) if k is None else k


_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


class Installation:
    """The patches on one UNet. Create with :func:`install`; inert until :meth:`activate`."""

    def __init__(self, unet: nn.Module, layout: UNetLayout, targets: UNetTargets | None = None):
        self._unet = weakref.ref(unet)
        self.layout = layout
        self.session: Session | None = None
        self.call: CallPlan | None = None
        self.targets: UNetTargets | None = targets  # None: resolved from the layout's backend
        self._timestep: float | None = None
        # ControlNet residuals held back from this call (diffusers), to add at the real skip sizes
        self._residuals: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None
        self._sizes_fixed = False  # this call must keep the vanilla sizes (T2I-Adapter residuals)
        # This call's ``control`` dict (ldm UNets taking one: Forge), a copy whose entries get resized
        self._control: dict[str, Any] | None = None
        self._handles: list[Any] = []
        self._overrides: list[tuple[nn.Module, Any, Callable]] = []
        try:
            self._install(unet)
        except BaseException:
            self.remove()
            raise

    # -- activation ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.session is not None

    def activate(
        self, settings: HiDiffusionSettings, progress: Callable[[], Any] | None = None, seed: int = 0
    ) -> Session:
        """Validate, then open the gate for one generation. Raises before changing anything."""
        if not isinstance(settings, HiDiffusionSettings):
            raise SettingsError(
                f"HiDiffusion settings must be a HiDiffusionSettings, got {type(settings).__name__}"
            )
        if progress is not None and not callable(progress):
            raise SettingsError(
                "HiDiffusion 'progress' must be a callable returning a fraction in [0, 1] or (step, total)"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SettingsError(f"HiDiffusion 'seed' must be an integer, got {seed!r}")
        if settings.preset != "auto":
            row_for(
                settings.preset, self.layout.family, self.layout.native
            )  # wrong-family preset -> SettingsError
        self.session = Session(settings, progress if progress is not None else (lambda: 0.0), seed)
        self.call = None
        return self.session

    def deactivate(self) -> None:
        self.session = None
        self.call = None
        self._timestep = None
        self._residuals = None
        self._sizes_fixed = False
        self._control = None

    # -- installation -------------------------------------------------------------------------
    def _hook(self, handle: Any) -> None:
        self._handles.append(handle)

    def _override_forward(self, module: nn.Module, patched: Callable[..., Any]) -> None:
        prev = module.__dict__.get("forward", _MISSING)
        stale = getattr(prev, "_hidiff_installation", None)
        if stale is not None:  # left by a library instance that was reloaded: take it off first
            stale.remove()
            prev = module.__dict__.get("forward", _MISSING)

        def original(*args: Any, **kwargs: Any) -> Any:
            if prev is not _MISSING:
                return prev(*args, **kwargs)
            return type(module).forward(module, *args, **kwargs)  # the class kernel current at call time

        def forward(*args: Any, **kwargs: Any) -> Any:
            return patched(original, *args, **kwargs)

        forward._hidiff_installation = self  # type: ignore[attr-defined]
        module.forward = forward
        self._overrides.append((module, prev, forward))

    def _install(self, unet: nn.Module) -> None:
        lay = self.layout
        t = self.targets = self.targets if self.targets is not None else targets_for(unet, lay)
        self._hook(unet.register_forward_pre_hook(self._unet_pre, with_kwargs=True))
        self._hook(unet.register_forward_hook(self._unet_post))
        self._hook(t.entry.register_forward_pre_hook(self._begin))
        for idx in sorted({lay.ca_input, *(skip for _, skip in lay.upsamples)}):
            self._hook(t.skips[idx].register_forward_hook(self._make_after_input(idx)))
        self._hook(t.ca_output.register_forward_hook(self._after_ca_output))

        self._override_forward(t.rad, self._downsample)
        for j, skip, up in t.upsamples:
            self._override_forward(up, self._make_upsample(j, skip, up))

        block_id = 0  # counts attn1 modules in layout.msw_blocks order: the same ids on every backend
        for transformer, attn1s in t.transformers:
            self._hook(transformer.register_forward_pre_hook(self._grid_pre, with_kwargs=True))
            for attn in attn1s:
                self._hook(attn.register_forward_pre_hook(self._make_attn_pre(block_id), with_kwargs=True))
                self._hook(attn.register_forward_hook(self._attn_post))
                block_id += 1

        if t.controlnet is not None:
            for block, skips in t.controlnet.up_blocks:
                self._hook(block.register_forward_pre_hook(self._make_add_residuals(skips), with_kwargs=True))
            self._hook(t.controlnet.mid.register_forward_hook(self._add_mid_residual))
        if t.control is not None:  # registered after the CA hook: they see the pooled map
            for i, block in enumerate(t.control.inputs):
                self._hook(block.register_forward_hook(self._make_fit_control(i)))
            self._hook(t.control.middle.register_forward_hook(self._fit_middle_control))

    def remove(self) -> None:
        """Take every patch off; afterwards the UNet holds no trace of this installation."""
        self.deactivate()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, prev, ours in reversed(self._overrides):
            if module.__dict__.get("forward") is ours:
                if prev is _MISSING:
                    del module.forward
                else:
                    module.forward = prev
        self._overrides.clear()
        unet = self._unet()
        if unet is not None and _REGISTRY.get(unet) is self:
            del _REGISTRY[unet]

    # -- the patches ----------------------------------------------------------------------------
    def _unet_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        self._timestep = None
        self._residuals = None
        self._sizes_fixed = False
        self._control = None
        session = self.session
        if session is None:
            return None
        # Only the sigma time mode reads the timestep: reading it costs a device sync on GPUs.
        if session.settings.time_mode == "sigma":
            t = _arg(args, kwargs, 1, self.targets.convention.timestep)
            self._timestep = (
                float(t.max()) if torch.is_tensor(t) and t.numel() else (float(t) if t is not None else None)
            )
        if self.targets.controlnet is not None:
            return self._take_residuals(self.targets.controlnet, args, kwargs)
        if self.targets.control is not None:
            return self._take_control(self.targets.control, args, kwargs)
        return None

    def _take_control(self, sinks: ControlDictSinks, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Hand the UNet a copy of its ``control`` dict (fresh lists), whose entries the hooks resize."""
        control = _arg(args, kwargs, sinks.position, sinks.arg)
        if not isinstance(control, dict):
            return None
        own = copy_control(control)
        self._control = own
        if sinks.arg in kwargs or len(args) <= sinks.position:
            return args, {**kwargs, sinks.arg: own}
        return (*args[: sinks.position], own, *args[sinks.position + 1 :]), kwargs

    def _take_residuals(self, sinks: ControlNetSinks, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Hold back ControlNet residuals, to add them at the skip sizes RAU-Net leaves (see ControlNetSinks)."""
        if kwargs.get(sinks.intrablock_arg) is not None or (
            kwargs.get(sinks.down_arg) is not None and kwargs.get(sinks.mid_arg) is None
        ):
            # T2I-Adapter residuals are added inside the down path at fixed sizes: keep the sizes.
            self._sizes_fixed = True
            return None
        down, mid = kwargs.get(sinks.down_arg), kwargs.get(sinks.mid_arg)
        if down is None or mid is None or len(down) != self.layout.n_blocks:
            return None
        self._residuals = (tuple(down), mid)
        return args, {**kwargs, sinks.down_arg: None, sinks.mid_arg: None}

    def _unet_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._timestep = None
        self._residuals = None
        self._sizes_fixed = False
        self._control = None
        self.call = None
        return None

    def _begin(self, module: nn.Module, args: tuple) -> None:
        self.call = None
        session = self.session
        if session is None or not args:
            return None
        hw = (int(args[0].shape[-2]), int(args[0].shape[-1]))
        native = self.layout.native
        if session.settings.gate and hw[0] * hw[1] <= native[0] * native[1]:
            return None
        call = session.plan(self.layout, hw, self._timestep)
        if self._sizes_fixed and (call.rad_on or call.ca_on):
            _warn_once("HiDiffusion: RAU-Net stays off while T2I-Adapter residuals are given; MSW-MSA runs")
            call.rad_on = call.ca_on = False
        self.call = call
        return None

    def _make_after_input(self, idx: int) -> Callable:
        def after_input(module: nn.Module, args: tuple, out: Any) -> Any:
            call = self.call
            if call is None:
                return None
            h = _first_tensor(out)
            if idx == self.layout.ca_input and call.ca_on:
                call.ca_size = (int(h.shape[-2]), int(h.shape[-1]))
                h = ca_pool(h)
                out = _with_first(out, h)
            call.skip_hw[idx] = (int(h.shape[-2]), int(h.shape[-1]))
            return out

        return after_input

    def _after_ca_output(self, module: nn.Module, args: tuple, out: Any) -> Any:
        call = self.call
        if call is None or not call.ca_on or call.ca_size is None:
            return None
        return _with_first(out, resize(_first_tensor(out), call.ca_size, self.session.settings.ca_upscale))

    def _downsample(self, original: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        call = self.call
        if call is None or not call.rad_on:
            return original(*args, **kwargs)
        # The Downsample's own forward runs (its norm, manual padding, hooks) around the RAD conv.
        with rad_conv(self.targets.rad_conv):
            return original(*args, **kwargs)

    def _make_upsample(self, j: int, skip: int, up: nn.Module) -> Callable:
        is_rau = j == self.layout.rau_output
        conv = self.targets.convention

        def upsample(original: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
            call = self.call
            size = call.skip_hw.get(skip) if call is not None else None
            if size is None:
                return original(*args, **kwargs)
            mode = self.session.settings.rau_upscale if (is_rau and call.rad_on) else "nearest"
            x = _arg(args, kwargs, 0, conv.hidden)
            if conv.upsample_size is None:  # ldm/sgm: the Upsample only doubles; resize, then its conv
                return upsample_to(up, x, size, mode)
            # diffusers: its Upsample2D interpolates (nearest) to an output size, then convolves.
            if mode != "nearest":
                x = resize(x, size, mode)  # the nearest step to the same size is then the identity
            kwargs = {k: v for k, v in kwargs.items() if k != conv.hidden}
            if len(args) > 1:  # the size given positionally: replace it there
                return original(x, size, *args[2:], **kwargs)
            return original(x, **{**kwargs, conv.upsample_size: size})

        return upsample

    def _grid_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        call = self.call
        if call is not None:
            x = _arg(args, kwargs, 0, self.targets.convention.hidden)
            if x is not None:
                call.st_hw = (int(x.shape[-2]), int(x.shape[-1]))
        return None

    def _make_attn_pre(self, block_id: int) -> Callable:
        conv = self.targets.convention

        def attn_pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            call = self.call
            if call is None:
                return None
            win = self._windowing(call, block_id, args, kwargs)
            call.windows.append((module, win))
            if win is None:
                return None
            x = _arg(args, kwargs, 0, conv.attn_x)
            xw = window_partition(x, win)
            # Self-attention written as context=x gets the windows as its context too.
            args = tuple(xw if a is x else a for a in args)
            kwargs = {k: (xw if v is x else v) for k, v in kwargs.items()}
            return args, kwargs

        return attn_pre

    def _windowing(self, call: CallPlan, block_id: int, args: tuple, kwargs: dict) -> Windowing | None:
        if not call.msw_on or call.st_hw is None:
            return None
        conv = self.targets.convention
        x = _arg(args, kwargs, 0, conv.attn_x)
        if not torch.is_tensor(x):
            return None
        context = _arg(args, kwargs, 1, conv.attn_context)
        if (
            context is not None and context is not x
        ):  # real cross-attention (disable_self_attn, only_cross_attention, reference banks)
            return None
        if _arg(args, kwargs, 2, conv.attn_mask) is not None or kwargs.get("additional_tokens") is not None:
            return None
        if kwargs.get("n_times_crossframe_attn_in_self", 0):
            return None
        value = kwargs.get("value")  # Forge's attn1: a separate value tensor (reference banks, patches)
        if torch.is_tensor(value) and value is not x:
            return None
        h, w = call.st_hw
        if x.dim() != 3 or x.shape[1] != h * w:  # token merging or another reshaping patch got here first
            return None
        return plan_windows(h, w, self.session.shift(call.step_key, block_id))

    def _attn_post(self, module: nn.Module, args: tuple, out: Any) -> Any:
        call = self.call
        if call is None or not call.windows or call.windows[-1][0] is not module:
            return None
        _, win = call.windows.pop()
        return None if win is None else _with_first(out, window_reverse(_first_tensor(out), win))

    def _make_add_residuals(self, skips: tuple[int, ...]) -> Callable:
        arg = self.targets.controlnet.skips_arg

        def add_residuals(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._residuals is None:
                return None
            down = self._residuals[0]
            have = _arg(args, kwargs, 1, arg)
            summed = tuple(
                h + _fit(down[i], h) for h, i in zip(have, skips)
            )  # diffusers' order: skip + residual
            if arg in kwargs or len(args) < 2:
                return args, {**kwargs, arg: summed}
            return (args[0], summed, *args[2:]), kwargs

        return add_residuals

    def _make_fit_control(self, idx: int) -> Callable:
        n_blocks = self.layout.n_blocks

        def fit_control(module: nn.Module, args: tuple, out: Any) -> None:
            if self._control is not None and self.call is not None:
                fit_input_block(self._control, idx, n_blocks, _first_tensor(out))
            return None

        return fit_control

    def _fit_middle_control(self, module: nn.Module, args: tuple, out: Any) -> None:
        if self._control is not None and self.call is not None:
            fit_middle_block(self._control, _first_tensor(out))
        return None

    def _add_mid_residual(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if self._residuals is None:
            return None
        return out + _fit(self._residuals[1], out)


def _arg(args: tuple, kwargs: dict, pos: int, name: str) -> Any:
    """A call argument given by keyword or at its usual position."""
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else None


def _first_tensor(out: Any) -> torch.Tensor:
    """The tensor a block returned: itself, the first item of a tuple, or ``.sample`` (diffusers outputs)."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.sample


def _with_first(out: Any, value: torch.Tensor) -> Any:
    """``out`` with its tensor replaced, in the same container."""
    if torch.is_tensor(out):
        return value
    if isinstance(out, (tuple, list)):
        return type(out)((value, *out[1:]))
    return dataclasses.replace(out, sample=value)


def _fit(residual: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ControlNet residual at the size of the feature it is added to (area-averaged when smaller)."""
    size = tuple(like.shape[-2:])
    return residual if tuple(residual.shape[-2:]) == size else resize(residual, size, "area")


def installed(unet: nn.Module) -> Installation | None:
    """The installation on this UNet, if any."""
    return _REGISTRY.get(unet)


def install(
    unet: nn.Module, layout: UNetLayout | None = None, *, targets: UNetTargets | None = None
) -> Installation:
    """Install HiDiffusion's (gated, inert) patches on a UNet; idempotent. Raises UnsupportedUNet.

    ``targets``: the modules to patch where a host calls them differently from the backend's own
    forward (ComfyUI runs each block's layers without calling the block); default: from the layout.
    """
    layout = layout if layout is not None else inspect_unet(unet)
    inst = _REGISTRY.get(unet)
    if inst is not None and (targets is None or inst.targets == targets):
        if inst.layout == layout:
            return inst
        same_blocks = {**vars(inst.layout), "native": None} == {**vars(layout), "native": None}
        if same_blocks:
            inst.layout = layout
            return inst
    if inst is not None:
        inst.remove()
    inst = Installation(unet, layout, targets)
    _REGISTRY[unet] = inst
    return inst


def uninstall(unet: nn.Module) -> bool:
    """Remove HiDiffusion from a UNet; True if it was installed."""
    inst = _REGISTRY.get(unet)
    if inst is None:
        return False
    inst.remove()
    return True


def uninstall_all() -> int:
    """Remove HiDiffusion from every UNet it is installed on (e.g. when the WebUI unloads scripts)."""
    insts = list(_REGISTRY.values())
    for inst in insts:
        inst.remove()
    return len(insts)


@contextmanager
def apply_hidiffusion(
    unet: nn.Module,
    settings: HiDiffusionSettings | None = None,
    *,
    progress: Callable[[], Any] | None = None,
    seed: int = 0,
    layout: UNetLayout | None = None,
) -> Iterator[Installation]:
    """Run HiDiffusion on ``unet`` inside the ``with`` block; the UNet is left exactly as found.

    ``progress()`` returns the fraction of the sampling schedule done (or ``(step, total)``);
    ``seed`` seeds the MSW-MSA window shifts. Raises UnsupportedUNet / SettingsError before
    anything is patched.
    """
    settings = settings if settings is not None else HiDiffusionSettings()
    was = installed(unet)
    previous = was.session if was is not None else None
    inst = install(unet, layout)
    try:
        inst.activate(settings, progress, seed)
    except BaseException:
        if was is None:
            inst.remove()
        raise
    try:
        yield inst
    finally:
        if was is None:
            inst.remove()
        else:
            inst.session, inst.call = previous, None
