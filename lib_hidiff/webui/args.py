"""The HiDiffusion script's arguments: positional order, defaults, parsing and validation.

The WebUI hands ``process()`` the UI values positionally, in the order ``ui()`` returned its
components; the HTTP API copies ``alwayson_scripts["HiDiffusion"]["args"]`` over the same slots and
also accepts one dict (``{"args": [{"enabled": true, "preset": "sdxl_2048"}]}``). ``FIELDS`` is that
order: it only ever grows at the end, because saved API calls and ui-config.json depend on it.
XYZ axes reach the same values through ``p.hidiff_<name>`` attributes, which win over the UI.

Pure Python: no WebUI and no gradio imports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib_hidiff.unet.presets import PRESETS, TIME_MODES, UPSCALE_MODES, HiDiffusionSettings, SettingsError

__all__ = [
    "FIELDS",
    "HIRES_POLICIES",
    "XYZ_ATTRS",
    "ArgsError",
    "Field",
    "ScriptArgs",
    "coerce",
    "defaults",
    "given_values",
    "parse_args",
    "xyz_overrides",
]

HIRES_POLICIES = ("off", "MSW-MSA only", "full")
"""What HiDiffusion does in the hires-fix second pass (structure already exists there)."""


class ArgsError(ValueError):
    """One HiDiffusion argument is wrong; the message names it and the allowed values."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "bool", "fraction", "choice", "text", "number" or "int" (the last two in [low, high])
    default: Any
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


FIELDS: tuple[Field, ...] = (
    Field("enabled", "bool", False),
    Field("preset", "choice", "auto", PRESETS),
    Field("raunet", "bool", True),
    Field("mswmsa", "bool", True),
    Field("custom_timing", "bool", False),
    Field("t1", "fraction", 0.4),
    Field("t2", "fraction", 0.0),
    Field("aggressive", "fraction", 0.16),
    Field("time_mode", "choice", "percent", TIME_MODES),
    Field("msw_start", "fraction", 0.0),
    Field("msw_end", "fraction", 1.0),
    Field("rau_upscale", "choice", "nearest", UPSCALE_MODES),
    Field("ca_upscale", "choice", "bicubic", UPSCALE_MODES),
    Field("hires", "choice", "off", HIRES_POLICIES),
)
_BY_NAME = {f.name: f for f in FIELDS}
_TIMING = ("t1", "t2", "aggressive")

# XYZ axis attribute on p -> field. Values set there win over the UI / API values.
XYZ_ATTRS = {f"hidiff_{name}": name for name in ("enabled", "preset", "raunet", "mswmsa", "t1", "t2")}


@dataclass(frozen=True)
class ScriptArgs:
    """Validated arguments of one generation."""

    enabled: bool = False
    preset: str = "auto"
    raunet: bool = True
    mswmsa: bool = True
    custom_timing: bool = False
    t1: float = 0.4
    t2: float = 0.0
    aggressive: float = 0.16
    time_mode: str = "percent"
    msw_start: float = 0.0
    msw_end: float = 1.0
    rau_upscale: str = "nearest"
    ca_upscale: str = "bicubic"
    hires: str = "off"

    def settings(self) -> HiDiffusionSettings:
        """The library settings of the first pass (raises ArgsError on a bad combination)."""
        timing = {k: getattr(self, k) for k in _TIMING} if self.custom_timing else {}
        try:
            return HiDiffusionSettings(
                preset=self.preset,
                raunet=self.raunet,
                mswmsa=self.mswmsa,
                time_mode=self.time_mode,
                msw_start=self.msw_start,
                msw_end=self.msw_end,
                rau_upscale=self.rau_upscale,
                ca_upscale=self.ca_upscale,
                **timing,
            )
        except SettingsError as e:
            raise ArgsError(str(e)) from None

    def replace(self, **changes: Any) -> ScriptArgs:
        return dataclasses.replace(self, **changes)


def defaults() -> dict[str, Any]:
    return {f.name: f.default for f in FIELDS}


def coerce(field: Field, value: Any, owner: str = "HiDiffusion") -> Any:
    """One value to its field's type, or ArgsError naming the field (of ``owner``'s script) and the
    allowed values."""
    where = f"{owner} argument {field.name!r}"
    if field.kind == "text":
        if not isinstance(value, str):
            raise ArgsError(f"{where} must be text, got {value!r}")
        return value
    if field.kind in ("number", "int"):
        return _bounded(field, value, where)
    if field.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ArgsError(f"{where} must be true or false, got {value!r}")
    if field.kind == "fraction":
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ArgsError(f"{where} must be a number in [0, 1], got {value!r}")
        if not 0.0 <= float(number) <= 1.0:
            raise ArgsError(f"{where} must be a number in [0, 1], got {value!r}")
        return float(number)
    if value not in field.choices:
        raise ArgsError(f"{where} must be one of {list(field.choices)}, got {value!r}")
    return value


def _bounded(field: Field, value: Any, where: str) -> float | int:
    """A number in [field.low, field.high]; an "int" field also takes 2.0 (what sliders send)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = value
    is_number = isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
    whole = field.kind == "int"
    if is_number and whole and float(number) != int(number):
        is_number = False
    if not is_number or not field.low <= float(number) <= field.high:
        kind = "an integer" if whole else "a number"
        raise ArgsError(f"{where} must be {kind} in [{field.low:g}, {field.high:g}], got {value!r}")
    return int(number) if whole else float(number)


def given_values(
    fields: Sequence[Field], args: Sequence[Any] | None, owner: str = "HiDiffusion"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A script's positional args (or one dict in slot 0) as (values given by slot, values named in
    the dict), checked for count and unknown names. Shared by every script of the extension.

    ``None`` in a slot means "default" (older API clients send it); missing trailing slots too.
    """
    args = list(args or ())
    if len(args) > len(fields):
        raise ArgsError(f"{owner} takes at most {len(fields)} positional arguments, got {len(args)}")
    if not (args and isinstance(args[0], Mapping)):
        return {f.name: v for f, v in zip(fields, args)}, {}
    # The API wrote the dict into slot 0; the other slots still hold the UI's defaults.
    names = [f.name for f in fields]
    named = dict(args[0])
    unknown = sorted(set(named) - set(names))
    if unknown:
        raise ArgsError(f"{owner} argument {unknown[0]!r} is unknown; allowed keys: {', '.join(names)}")
    named.setdefault("enabled", True)  # a dict of a script's settings asks for that script
    return {f.name: v for f, v in zip(fields[1:], args[1:])}, named


def parse_args(args: Sequence[Any] | None, overrides: Mapping[str, Any] | None = None) -> ScriptArgs:
    """Turn the script's positional args (or one dict in slot 0) plus XYZ overrides into ScriptArgs.

    ``None`` in a slot means "default" (older API clients send it); missing trailing slots too.
    A dict names fields (missing "enabled" means true) over the values in the other slots.
    Raises ArgsError with a single line naming the argument.
    """
    values = defaults()
    given, named = given_values(FIELDS, args)
    if any(named.get(k) is not None for k in _TIMING) and "custom_timing" not in named:
        named["custom_timing"] = True  # naming T1/T2/aggressive in the API means "use these"
    given.update(named)
    for name, value in given.items():
        if value is not None:
            values[name] = coerce(_BY_NAME[name], value)
    for name, value in (overrides or {}).items():
        values[name] = coerce(_BY_NAME[name], value)
        if name in _TIMING:
            values["custom_timing"] = True
    parsed = ScriptArgs(**values)
    if parsed.msw_start > parsed.msw_end:
        raise ArgsError(
            f"HiDiffusion argument 'msw_start' must be <= 'msw_end', got {parsed.msw_start} > {parsed.msw_end}"
        )
    return parsed


def xyz_overrides(p: Any) -> dict[str, Any]:
    """The ``p.hidiff_*`` values an XYZ cell set (each cell is a copy of p, so nothing leaks)."""
    return {name: getattr(p, attr) for attr, name in XYZ_ATTRS.items() if getattr(p, attr, None) is not None}
