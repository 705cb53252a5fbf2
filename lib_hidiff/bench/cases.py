"""What the bench times: models with random weights, and one :class:`Case` per UNet configuration.

A model set holds the real ldm UNet (the WebUI's network, SDPA attention) and, when the official
``hidiffusion`` package imports, two diffusers twins with the same weights: a plain one and one the
official code is applied to. Cases at one latent size:

* ``vanilla`` -- the ldm UNet, nothing installed;
* ``disabled`` -- HiDiffusion installed, gate off (what the WebUI leaves between generations);
* ``hidiff:<parts>`` -- one case per phase of the schedule at that size (RAU-Net phase, late
  MSW-MSA-only phase, ...), run at the phase's first step of ``steps``;
* ``diffusers`` and ``official:<parts>`` -- the diffusers twin, plain and with the official code.

Phases come from the core's own planner, so a case runs exactly what a generation would at that
step. A scaled run (``side_scale < 1``) gives the UNet a smaller native size and pins each size's
preset row to the one the full-size image would use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

import lib_hidiff as hd
from lib_hidiff import zoo
from lib_hidiff.unet.layout import FAMILY_MAPS
from lib_hidiff.unet.patcher import Session
from lib_hidiff.unet.presets import row_for

__all__ = ["BenchConfig", "Case", "ModelSet", "Phase", "build_models", "make_cases", "official_available"]

FULL_WIDTH = 320
CONTEXT_TOKENS = 77


@dataclass(frozen=True)
class BenchConfig:
    """One family's benchmark configuration."""

    family: str
    width: int = FULL_WIDTH
    side_scale: float = 1.0  # native latent side used = family native x side_scale
    heads: int | None = None  # None: the family's rule (SD 1.x at reduced width: keep head dim ~40)
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch: int = 2
    steps: int = 50
    official: bool = True
    seed: int = 0

    @property
    def full_native(self) -> int:
        return FAMILY_MAPS[self.family].native

    @property
    def native(self) -> int:
        return max(8, int(round(self.full_native * self.side_scale / 8)) * 8)

    @property
    def scaled(self) -> bool:
        return self.native != self.full_native

    @property
    def n_heads(self) -> int | None:
        """Heads passed to the zoo (None: the family's own rule)."""
        if self.heads is not None or self.width == FULL_WIDTH:
            return self.heads
        if self.family == "sd1":  # SD 1.x has 8 heads of 40 channels at full width: keep ~40 per head
            return max(1, round(self.width / 40))
        return None

    def _heads_text(self) -> str:
        spec = zoo.FAMILIES[self.family]
        if self.n_heads is not None:
            return f"{self.n_heads} heads"
        if spec.head_channels and self.width >= spec.head_channels:
            return f"heads of {spec.head_channels} channels"
        return f"{spec.heads or 2} heads"

    def describe(self) -> str:
        """One line saying exactly what runs."""
        spec = zoo.FAMILIES[self.family]
        size = "full size" if self.width == FULL_WIDTH else f"reduced from {FULL_WIDTH}"
        native = f"native latent {self.native}²"
        if self.scaled:
            native += (
                f" (scaled from {self.full_native}²; each size keeps the schedule row of its full-size image)"
            )
        text = (
            f"{self.family} layout, width {self.width} ({size}), {self._heads_text()}, "
            f"context {CONTEXT_TOKENS}x{spec.context_dim}, transformer depths {spec.depths}; {native}; "
            f"batch {self.batch} (CFG); {str(self.dtype).replace('torch.', '')} on {self.device}; SDPA attention"
        )
        if self.family == "sdxl":
            text += "; built by ldm, so without SDXL's label_emb (class embedding), a negligible part of the compute"
        return text


def official_available() -> str | None:
    """None when the official package imports, else the reason it does not."""
    try:
        import hidiffusion  # noqa: F401
    except Exception as e:  # ImportError, or diffusers too new/old for it
        return f"{type(e).__name__}: {e}"
    return None


@dataclass
class ModelSet:
    """The UNets one family is timed with, on one device."""

    cfg: BenchConfig
    unet: nn.Module
    layout: Any
    twin: nn.Module | None = None
    official: Any = None
    counters: list[nn.Module] = field(default_factory=list)
    official_note: str | None = None

    def release(self) -> None:
        """Take HiDiffusion and the official patches off.

        Only one official installation per process works at a time: the official code stores its
        state on every module of the UNet, including the activation modules diffusers shares between
        models, and applying it again clears the hooks listed there -- the older model's size hook.
        """
        hd.uninstall(self.unet)
        if self.official is not None:
            self.official.remove()
            self.official = None


def _to(module: nn.Module, cfg: BenchConfig) -> nn.Module:
    return module if cfg.device == "meta" else module.to(device=cfg.device, dtype=cfg.dtype)


def build_models(cfg: BenchConfig) -> ModelSet:
    """Build the ldm UNet (and the twins) with the same random weights, moved to the device.

    On the ``meta`` device nothing is computed: it serves to count full-size FLOPs on any machine.
    """
    meta = cfg.device == "meta"
    with torch.device("meta") if meta else torch.device("cpu"):
        base = zoo.build_ldm_unet(cfg.family, cfg.width, heads=cfg.n_heads, seed=cfg.seed)
    note = None if cfg.official else "official: not requested"
    twin = official = None
    counters: list[nn.Module] = []
    if note is None:
        note = official_available()
    if note is None:
        with torch.device("meta") if meta else torch.device("cpu"):
            twin = _to(zoo.diffusers_twin(base, cfg.family), cfg)
            official = zoo.OfficialHiDiffusion(
                _to(zoo.diffusers_twin(base, cfg.family), cfg), cfg.family, cfg.steps
            )
        # The official step counters, set directly before each call (zoo's driver walks all modules).
        counters = [
            m
            for m in official.unet.modules()
            if hasattr(m, "max_timestep") and isinstance(getattr(m, "timestep", None), int)
        ]
    unet = _to(base, cfg)
    if meta:  # ldm builds the timestep embedding on the timesteps' device: keep those real (CPU)
        unet.time_embed.register_forward_pre_hook(lambda m, args: tuple(a.to("meta") for a in args))
    layout = hd.inspect_unet(unet).with_native(cfg.native)
    return ModelSet(cfg, unet, layout, twin, official, counters, note)


@dataclass(frozen=True)
class Phase:
    """Consecutive steps of a generation that run the same parts of HiDiffusion."""

    parts: str  # e.g. "RAD+MSW", "MSW", "off"
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def steps(self, n: int) -> str:
        return f"steps {self.first}-{self.last} of {n}" if self.count > 1 else f"step {self.first} of {n}"


def _parts(plan: Any) -> str:
    on = [name for name, flag in (("RAD", plan.rad_on), ("CA", plan.ca_on), ("MSW", plan.msw_on)) if flag]
    return "+".join(on) if on else "off"


def phases(layout: Any, settings: hd.HiDiffusionSettings, hw: tuple[int, int], steps: int) -> list[Phase]:
    """The schedule at latent size ``hw`` as the core plans it, split into runs of equal parts."""
    native = layout.native
    out: list[Phase] = []
    for i in range(steps):
        if settings.gate and hw[0] * hw[1] <= native[0] * native[1]:
            parts = "pass-through"
        else:
            parts = _parts(Session(settings, lambda i=i: (i, steps), 0).plan(layout, hw, None))
        if out and out[-1].parts == parts:
            out[-1] = Phase(parts, out[-1].first, i)
        else:
            out.append(Phase(parts, i, i))
    return out


@dataclass
class Case:
    """One timed configuration at one size: ``enter``/``exit`` run outside the timer."""

    key: str  # stable across sizes (plots)
    label: str
    impl: str  # "ldm" or "diffusers"
    phase: str
    weight: int  # steps of the generation this forward stands for (0 = not part of a generation)
    forward: Callable[[], torch.Tensor]
    enter: Callable[[], None] = lambda: None
    exit: Callable[[], None] = lambda: None


def _inputs(ms: ModelSet, side: int) -> dict[str, Any]:
    cfg = ms.cfg
    gen = torch.Generator().manual_seed(cfg.seed + side)
    ctx_dim = zoo.FAMILIES[cfg.family].context_dim
    x = torch.randn(cfg.batch, 4, side, side, generator=gen)
    ctx = torch.randn(cfg.batch, CONTEXT_TOKENS, ctx_dim, generator=gen)
    t = torch.full((cfg.batch,), 500.0)
    dev = "meta" if cfg.device == "meta" else cfg.device
    x, ctx = (v.to(device=dev, dtype=cfg.dtype) for v in (x, ctx))
    return {
        "x": x,
        "t_ldm": t if cfg.device == "meta" else t.to(dev),  # see build_models: real on meta
        "t": t.to(dev),
        "ctx_ldm": zoo.ldm_context(ms.unet, ctx),
        "ctx": ctx,
    }


def preset_for(cfg: BenchConfig, mult: int) -> str:
    """The preset row the full-size image at ``mult`` x native side would use (official auto rule)."""
    side = cfg.full_native * mult
    return row_for("auto", cfg.family, (side, side)).key


def make_cases(ms: ModelSet, mult: int) -> tuple[list[Case], list[str]]:
    """The cases at ``mult`` x the native side, and notes on anything left out."""
    cfg, unet, layout = ms.cfg, ms.unet, ms.layout
    side = cfg.native * mult
    hw = (side, side)
    inp = _inputs(ms, side)
    notes: list[str] = []
    n = cfg.steps

    # The WebUI runs ldm half-precision weights under autocast (ldm casts the input to its own
    # float32 dtype); diffusers runs half weights as they are.
    half = cfg.device.startswith("cuda") and cfg.dtype != torch.float32

    def ldm() -> torch.Tensor:
        with torch.autocast("cuda", dtype=cfg.dtype) if half else contextlib.nullcontext():
            return unet(inp["x"], inp["t_ldm"], context=inp["ctx_ldm"])

    def install() -> None:
        hd.install(unet, layout)

    def uninstall() -> None:
        hd.uninstall(unet)

    def check_vanilla() -> None:
        if hd.installed(unet) is not None:
            raise RuntimeError("bench: HiDiffusion left installed on the vanilla UNet")

    cases = [
        Case("vanilla", "vanilla (ldm)", "ldm", "-", 0, ldm, check_vanilla),
        Case("disabled", "installed, disabled", "ldm", "gate off", 0, ldm, install, uninstall),
    ]
    settings = hd.HiDiffusionSettings(preset=preset_for(cfg, mult))
    for ph in phases(layout, settings, hw, n):

        def activate(step: int = ph.first) -> None:
            hd.install(unet, layout).activate(settings, progress=lambda: (step, n), seed=cfg.seed)

        cases.append(
            Case(
                f"hidiff:{ph.parts}",
                f"HiDiffusion {ph.parts}",
                "ldm",
                ph.steps(n),
                ph.count,
                ldm,
                activate,
                uninstall,
            )
        )

    if ms.official is None:
        notes.append(ms.official_note or "official: unavailable")
        return cases, notes
    # The official code picks its schedule row from the absolute latent size; compare only where that
    # is the row this size stands for (always, unless a scaled run reaches another row).
    official_row = row_for("auto", cfg.family, hw).key
    twin, off = ms.twin, ms.official

    def plain() -> torch.Tensor:
        return twin(inp["x"], inp["t"], encoder_hidden_states=inp["ctx"]).sample

    cases.append(Case("diffusers", "vanilla (diffusers twin)", "diffusers", "-", 0, plain))
    if official_row != settings.preset:
        notes.append(
            f"official at {side}x{side}: skipped, its schedule follows the absolute size (row {official_row}, "
            f"full size uses {settings.preset}); run unscaled to compare"
        )
        return cases, notes
    # The official code has no resolution gate: at native size it runs RAU-Net too.
    for ph in phases(layout, settings.replace(gate=False), hw, n):

        def official(step: int = ph.first) -> torch.Tensor:
            for m in ms.counters:
                m.timestep = step
            return off.unet(inp["x"], inp["t"], encoder_hidden_states=inp["ctx"]).sample

        cases.append(
            Case(f"official:{ph.parts}", f"official {ph.parts}", "diffusers", ph.steps(n), ph.count, official)
        )
    return cases, notes


def full_size(cfg: BenchConfig) -> BenchConfig:
    """The same family at full width and native size, on the meta device (FLOP counting only)."""
    return BenchConfig(
        cfg.family, FULL_WIDTH, 1.0, None, "meta", torch.float32, cfg.batch, cfg.steps, cfg.official, cfg.seed
    )
