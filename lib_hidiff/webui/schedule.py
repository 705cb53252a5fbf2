"""The effective HiDiffusion schedule of one sampling pass: which preset row applies and on which
steps RAD/RAU, CA and MSW-MSA run.

It applies the patcher's own rules to every tick of the sampler's clock -- ``row_for`` (the table
row for the latent size), ``HiDiffusionSettings.windows`` (each part's [start, end) window) and
``in_window`` (the official integer rule ``int(N*start) <= i < int(N*end)``) -- so it cannot
disagree with the patcher at that clock. The clock is the one the patcher reads: ``total`` ticks
per pass (the WebUI's CFG denoiser counts model calls: two per step for second-order samplers) over
``steps`` sampler steps.

Host-free (imports lib_hidiff.unet only): the WebUI glue supplies size, steps and ticks; library
users can call :func:`pass_schedule` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib_hidiff.unet.layout import FAMILY_MAPS, UNetLayout
from lib_hidiff.unet.patcher import in_window
from lib_hidiff.unet.presets import HiDiffusionSettings, PresetRow, row_for

__all__ = ["FAMILY_LABELS", "Part", "PassSchedule", "pass_schedule"]

LATENT_SCALE = 8  # pixels per latent cell (SD 1.x/2.x and SDXL VAEs)
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
PART_LABELS = {"rad": "RAD/RAU", "ca": "CA", "msw": "MSW-MSA"}
MAX_STEPS = 1000  # how far "use at least N steps" looks


@dataclass(frozen=True)
class Part:
    """One part of HiDiffusion in one pass: RAU-Net's down/upsampler ("rad") or attention-block
    pair ("ca"), or MSW-MSA ("msw")."""

    name: str
    enabled: bool  # its switch is on (RAU-Net for "rad"/"ca", MSW-MSA for "msw")
    window: tuple[float, float]  # [start, end): fractions of the steps, or of model time (sigma mode)
    ticks: tuple[int, ...] | None  # clock ticks it runs on; None in sigma mode (noise-dependent)

    @property
    def meant(self) -> bool:
        """Enabled with a window that is not empty as fractions: the settings mean it to run."""
        return self.enabled and self.window[1] > self.window[0]


@dataclass(frozen=True)
class PassSchedule:
    """What HiDiffusion does in one sampling pass (see :func:`pass_schedule`)."""

    family: str
    width: int
    height: int
    native: tuple[int, int]  # (width, height) in pixels
    steps: int
    total: int
    settings: HiDiffusionSettings
    row: PresetRow
    active: bool  # above the native area: the resolution gate lets HiDiffusion act
    rad: Part
    ca: Part
    msw: Part
    hires: bool = False

    # -- facts ----------------------------------------------------------------------------------
    @property
    def sigma(self) -> bool:
        return self.settings.time_mode == "sigma"

    def step_of(self, tick: int) -> int:
        """The 1-based sampler step a clock tick belongs to."""
        return tick * self.steps // self.total + 1

    def spans(self, ticks: tuple[int, ...]) -> list[tuple[int, int]]:
        """Runs of consecutive 1-based steps the ticks fall on."""
        out: list[tuple[int, int]] = []
        for step in sorted({self.step_of(t) for t in ticks}):
            if out and step == out[-1][1] + 1:
                out[-1] = (out[-1][0], step)
            else:
                out.append((step, step))
        return out

    def raunet_ticks(self) -> tuple[int, ...] | None:
        if self.sigma:
            return None
        return tuple(sorted(set(self.rad.ticks or ()) | set(self.ca.ticks or ())))

    def vanished(self) -> list[Part]:
        """Parts the settings mean to run that cover no tick (only where HiDiffusion acts at all)."""
        if not self.active or self.sigma:
            return []
        return [part for part in (self.rad, self.ca, self.msw) if part.meant and not part.ticks]

    def differs(self) -> bool:
        """The effective schedule differs from what the preset (and settings) imply: a part they
        mean to run gets no step at this step count. Rounding a window to whole steps is the
        official rule, not a difference."""
        return bool(self.vanished())

    # -- words ----------------------------------------------------------------------------------
    def _pass(self) -> str:
        return "hires pass" if self.hires else "pass"

    def _steps_word(self) -> str:
        calls = f" ({self.total} model calls)" if self.total != self.steps else ""
        return f"{self.steps} steps{calls}"

    def _span_text(self, ticks: tuple[int, ...], dash: str = "–") -> str:
        spans = self.spans(ticks)
        if not spans:
            return "none"
        return ", ".join(str(a) if a == b else f"{a}{dash}{b}" for a, b in spans)

    def _steps_text(self, ticks: tuple[int, ...]) -> str:
        spans = self.spans(ticks)
        if spans == [(1, self.steps)]:
            return "all steps"
        if not spans:
            return "on no step"
        single = len(spans) == 1 and spans[0][0] == spans[0][1]
        return f"{'step' if single else 'steps'} {self._span_text(ticks)}"

    def _knob(self, part: Part) -> str:
        """The setting that sizes ``part``'s window (for advice)."""
        if part.name == "msw":
            return "MSW-MSA end"
        if self.row.family == "sd":
            return "T1" if part.name == "rad" else "T2"
        if part.name == "ca":
            return "T1"
        return "aggressive fraction" if self.ca.window[0] > 0 else "T2"

    def _rule(self, part: Part) -> str:
        start, end = part.window
        n = self.total
        if int(n * start) == 0:
            return f"int({n} × {end:g}) = {int(n * end)}"
        return f"int({n} × {start:g}) = {int(n * start)}, int({n} × {end:g}) = {int(n * end)}"

    def _min_steps(self, part: Part) -> int | None:
        """The fewest steps (same model calls per step) at which ``part``'s window gets a tick."""
        for steps in range(self.steps + 1, MAX_STEPS + 1):
            total = max(round(steps * self.total / self.steps), 1)
            if any(in_window((i, total), part.window) for i in range(total)):
                return steps
        return None

    def _problem(self, what: str, parts: list[Part]) -> str:
        if not parts:  # enabled, but every window is empty as set
            return f"{what} runs on no step of this {self._pass()}: its windows are empty"
        part = max(parts, key=lambda q: q.window[1])
        need = self._min_steps(part)
        more = f"at least {need} {'hires ' if self.hires else ''}steps or " if need else ""
        return (
            f"{what} runs on no step of this {self._pass()} ({self._steps_word()}: official rule "
            f"{self._rule(part)}); use {more}a larger {self._knob(part)}"
        )

    def warnings(self) -> list[str]:
        """One line per enabled part that runs on no step (where HiDiffusion acts at all)."""
        if not self.active or self.sigma:
            return []
        out = []
        if self.settings.raunet and not self.raunet_ticks():
            out.append(self._problem("RAU-Net", [p for p in (self.rad, self.ca) if p.meant]))
        if self.msw.enabled and not self.msw.ticks:
            out.append(self._problem("MSW-MSA", [self.msw] if self.msw.meant else []))
        return out

    def _raunet_text(self) -> str:
        if not self.settings.raunet:
            return "RAU-Net off"
        meant = [p for p in (self.rad, self.ca) if p.meant]
        if self.sigma:
            windows = ", ".join(f"{PART_LABELS[p.name]} {p.window[0]:g}–{p.window[1]:g}" for p in meant)
            return f"RAU-Net by model time: {windows or 'none'}"
        ticks = self.raunet_ticks() or ()
        text = f"RAU-Net {self._steps_text(ticks)} of {self.steps}"
        # Name the halves when they run on different steps (or one of them on none).
        if ticks and len(meant) == 2 and self.spans(self.rad.ticks) != self.spans(self.ca.ticks):
            text += " (" + ", ".join(f"{PART_LABELS[p.name]} {self._span_text(p.ticks)}" for p in meant) + ")"
        return text

    def _msw_text(self) -> str:
        if not self.msw.enabled:
            return "MSW-MSA off"
        if self.sigma:
            start, end = self.msw.window
            return (
                "MSW-MSA all steps"
                if (start, end) == (0.0, 1.0)
                else f"MSW-MSA by model time {start:g}–{end:g}"
            )
        return f"MSW-MSA {self._steps_text(self.msw.ticks)}"

    def describe(self) -> str:
        """One line: size, steps, model, the row `auto` picks and the steps each part runs on."""
        size = f"{self.width}×{self.height}"
        family = FAMILY_LABELS.get(self.family, self.family)
        prefix = "hires pass " if self.hires else ""
        if not self.active:
            nw, nh = self.native
            return f"{prefix}{size}, {family}: not above the native {nw}×{nh}, HiDiffusion changes nothing"
        if not (self.settings.raunet or self.msw.enabled):
            return f"{prefix}{size}, {family}: HiDiffusion off (RAU-Net and MSW-MSA off)"
        preset = f"auto → {self.row.key}" if self.settings.preset == "auto" else self.row.key
        return (
            f"{prefix}{size}, {self._steps_word()}, {family}: preset {preset} — "
            f"{self._raunet_text()}, {self._msw_text()}"
        )

    def record(self) -> str | None:
        """The infotext value of the effective schedule, or None when it does not differ."""
        if not self.differs():
            return None
        parts = [p for p in (self.rad, self.ca, self.msw) if p.meant]
        body = ", ".join(f"{PART_LABELS[p.name]} {self._span_text(p.ticks, '-')}" for p in parts)
        return f"{self._steps_word()}: {body}"

    def as_dict(self) -> dict[str, Any]:
        """JSON for API clients."""

        def part(p: Part) -> dict[str, Any]:
            return {
                "enabled": p.enabled,
                "window": list(p.window),
                "steps": None if p.ticks is None else [list(s) for s in self.spans(p.ticks)],
                "model_calls": None if p.ticks is None else len(p.ticks),
            }

        ticks = self.raunet_ticks()
        return {
            "pass": "hires" if self.hires else "base",
            "width": self.width,
            "height": self.height,
            "family": self.family,
            "native": {"width": self.native[0], "height": self.native[1]},
            "active": self.active,
            "steps": self.steps,
            "model_calls": self.total,
            "time_mode": self.settings.time_mode,
            "preset": self.settings.preset,
            "row": self.row.key,
            "raunet": {
                "enabled": self.settings.raunet,
                "steps": None if ticks is None else [list(s) for s in self.spans(ticks)],
                "rad": part(self.rad),
                "ca": part(self.ca),
            },
            "mswmsa": part(self.msw),
            "differs": self.differs(),
            "warnings": self.warnings(),
            "text": self.describe(),
        }


def pass_schedule(
    model: UNetLayout | str,
    width: int,
    height: int,
    settings: HiDiffusionSettings,
    steps: int,
    total: int | None = None,
    *,
    hires: bool = False,
) -> PassSchedule:
    """The effective schedule of one pass of ``steps`` sampler steps at ``width`` x ``height`` px.

    ``model``: the UNet's layout (native size, inpainting channels), or a family name ("sd1",
    "sd2", "sdxl") for its default layout. ``total``: ticks of the sampler's clock in this pass
    (model calls; default ``steps``). Raises SettingsError for a preset of another family.
    """
    if isinstance(model, str):
        family, native_hw, inpainting, attention = model, (FAMILY_MAPS[model].native,) * 2, False, True
    else:
        family, native_hw, inpainting = model.family, model.native, model.inpainting
        attention = model.n_attn1 > 0
    steps = max(int(steps), 1)
    total = max(int(total if total is not None else steps), 1)
    latent = (int(height) // LATENT_SCALE, int(width) // LATENT_SCALE)
    # The patcher's resolution gate and table row for a UNet call at this latent size.
    active = not settings.gate or latent[0] * latent[1] > native_hw[0] * native_hw[1]
    row = row_for(settings.preset, family, latent)
    windows = settings.windows(row, inpainting=inpainting)

    def part(name: str, enabled: bool, window: tuple[float, float]) -> Part:
        if settings.time_mode == "sigma":
            return Part(name, enabled, window, None)
        runs = enabled and active  # the patcher: "<switch> and in_window(clock, window)", behind the gate
        return Part(
            name, enabled, window, tuple(i for i in range(total) if runs and in_window((i, total), window))
        )

    return PassSchedule(
        family=family,
        width=int(width),
        height=int(height),
        native=(native_hw[1] * LATENT_SCALE, native_hw[0] * LATENT_SCALE),
        steps=steps,
        total=total,
        settings=settings,
        row=row,
        active=active,
        rad=part("rad", settings.raunet, windows["rad"]),
        ca=part("ca", settings.raunet, windows["ca"]),
        msw=part("msw", settings.mswmsa and attention, (settings.msw_start, settings.msw_end)),
        hires=hires,
    )
