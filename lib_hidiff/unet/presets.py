"""HiDiffusion presets and per-generation settings, kept as data.

The official implementation (megvii-research/HiDiffusion, hidiffusion 0.1.10) keys RAU-Net to two
ratios per table row, T1 and T2, whose *roles* differ per model family:

* SD 1.x/2.x: the RAD/RAU pair runs for T1, the CA pool/unpool pair for T2;
* SDXL: the CA pair runs for T1, the RAD/RAU pair for T2, and below 4096 px the "aggressive"
  schedule runs RAD for the first 8/50 of the steps and CA from there to T1.

A step i of N is inside a window [start, end) when ``int(N*start) <= i < int(N*end)`` -- the exact
integer rule of the official code, float rounding included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "FAMILY_ROLES",
    "OFFICIAL_ROWS",
    "PRESETS",
    "HiDiffusionSettings",
    "PresetRow",
    "SettingsError",
    "row_for",
]


class SettingsError(ValueError):
    """A HiDiffusion setting is out of range; the message names the setting and the allowed values."""


@dataclass(frozen=True)
class PresetRow:
    """One row of the official schedule table."""

    key: str
    family: str  # "sd" (SD 1.x/2.x) or "sdxl"
    t1: float
    t2: float
    aggressive: float | None = None  # SDXL two-phase split (fraction of steps), None = off


# switching_threshold_ratio_dict + is_aggressive_raunet / aggressive_step = 8 (of 50) of the official code.
OFFICIAL_ROWS: dict[str, PresetRow] = {
    row.key: row
    for row in (
        PresetRow("sd15_1024", "sd", 0.4, 0.0),
        PresetRow("sd15_2048", "sd", 0.7, 0.3),
        PresetRow("sdxl_2048", "sdxl", 0.4, 0.0, aggressive=8 / 50),
        PresetRow("sdxl_4096", "sdxl", 0.7, 0.3),
        PresetRow("sdxl_turbo", "sdxl", 0.5, 0.0),
    )
}

# Which ratio drives which part of RAU-Net, per family.
FAMILY_ROLES: dict[str, dict[str, str]] = {
    "sd": {"rad": "t1", "ca": "t2"},
    "sdxl": {"rad": "t2", "ca": "t1"},
}

# Official size switch (latent px, an OR over the two sides): below -> first row, else second row.
_AUTO_SWITCH: dict[str, tuple[int, str, str]] = {
    "sd": (256, "sd15_1024", "sd15_2048"),
    "sdxl": (512, "sdxl_2048", "sdxl_4096"),
}

# User-facing preset names: "auto" follows the official table by family and latent size.
PRESETS: tuple[str, ...] = ("auto", *OFFICIAL_ROWS)

TIME_MODES = ("percent", "sigma")
UPSCALE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def family_group(family: str) -> str:
    """Map a layout family ("sd1", "sd2", "sdxl") to the preset family ("sd" or "sdxl")."""
    return "sdxl" if family.startswith("sdxl") else "sd"


def row_for(preset: str, family: str, latent_hw: tuple[int, int]) -> PresetRow:
    """The table row a UNet call uses: fixed by the preset, or chosen like the official code."""
    group = family_group(family)
    if preset == "auto":
        limit, small, large = _AUTO_SWITCH[group]
        h, w = latent_hw
        return OFFICIAL_ROWS[small if (h < limit or w < limit) else large]
    row = OFFICIAL_ROWS[preset]
    if row.family != group:
        raise SettingsError(
            f"HiDiffusion preset {preset!r} is for {row.family.upper()} models; this UNet is {family}: "
            f"use 'auto' or one of {[k for k, r in OFFICIAL_ROWS.items() if r.family == group]}"
        )
    return row


def _check_fraction(name: str, value: float | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise SettingsError(f"HiDiffusion setting {name!r} must be a number in [0, 1], got {value!r}")


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise SettingsError(f"HiDiffusion setting {name!r} must be one of {list(choices)}, got {value!r}")


@dataclass(frozen=True)
class HiDiffusionSettings:
    """Immutable, validated settings for one generation.

    ``None`` for t1 / t2 / aggressive means "take the preset row's value"; ``aggressive=0`` turns
    the SDXL two-phase schedule off. Windows are fractions of the sampling schedule
    (``time_mode="percent"``, the official rule) or of model time read from the UNet's timestep
    (``time_mode="sigma"``, 0 = pure noise, 1 = clean).
    """

    preset: str = "auto"
    raunet: bool = True
    mswmsa: bool = True
    t1: float | None = None
    t2: float | None = None
    aggressive: float | None = None
    time_mode: str = "percent"
    msw_start: float = 0.0
    msw_end: float = 1.0
    msw_shift: int | None = None  # fixed window shift k in 0..3; None = random per (step, block)
    rau_upscale: str = "nearest"
    ca_upscale: str = "bicubic"
    gate: bool = True  # pass calls at or below the native latent area through untouched

    def __post_init__(self) -> None:
        _check_choice("preset", self.preset, PRESETS)
        for name in ("raunet", "mswmsa", "gate"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(
                    f"HiDiffusion setting {name!r} must be true or false, got {getattr(self, name)!r}"
                )
        for name in ("t1", "t2", "aggressive"):
            _check_fraction(name, getattr(self, name))
        for name in ("msw_start", "msw_end"):
            _check_fraction(name, getattr(self, name), allow_none=False)
        if self.msw_start > self.msw_end:
            raise SettingsError(
                f"HiDiffusion setting 'msw_start' must be <= 'msw_end', got {self.msw_start} > {self.msw_end}"
            )
        _check_choice("time_mode", self.time_mode, TIME_MODES)
        if self.msw_shift is not None and (
            isinstance(self.msw_shift, bool)
            or not isinstance(self.msw_shift, int)
            or not 0 <= self.msw_shift <= 3
        ):
            raise SettingsError(
                f"HiDiffusion setting 'msw_shift' must be an integer in 0..3 or None, got {self.msw_shift!r}"
            )
        _check_choice("rau_upscale", self.rau_upscale, UPSCALE_MODES)
        _check_choice("ca_upscale", self.ca_upscale, UPSCALE_MODES)

    def replace(self, **changes) -> HiDiffusionSettings:
        return dataclasses.replace(self, **changes)

    def windows(self, row: PresetRow, inpainting: bool = False) -> dict[str, tuple[float, float]]:
        """The [start, end) windows of RAD/RAU ("rad") and CA ("ca") for a table row.

        Like the official code, inpainting models do not use the aggressive schedule by default.
        """
        t1 = row.t1 if self.t1 is None else float(self.t1)
        t2 = row.t2 if self.t2 is None else float(self.t2)
        roles = FAMILY_ROLES[row.family]
        ratio = {"t1": t1, "t2": t2}
        default = None if inpainting else row.aggressive
        aggressive = default if self.aggressive is None else (float(self.aggressive) or None)
        if row.family == "sdxl" and aggressive is not None:
            return {"rad": (0.0, aggressive), "ca": (aggressive, ratio[roles["ca"]])}
        return {"rad": (0.0, ratio[roles["rad"]]), "ca": (0.0, ratio[roles["ca"]])}
