"""The "CFG++ inversion" script's arguments: positional order, defaults, parsing and validation.

Same conventions as the HiDiffusion script (args.py, whose Field / coerce / ArgsError it uses): the
WebUI hands ``process()`` the UI values positionally in ``FIELDS`` order (it only grows at the
end); the HTTP API writes ``alwayson_scripts["CFG++ inversion"]["args"]`` over the same slots or
sends one dict (``{"args": [{"source_prompt": "a cat", "iterations": 2}]}``, which means "on");
XYZ axes set ``p.cfgpp_inversion_<name>`` attributes, which win over both.

Pure Python: no WebUI and no gradio imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .args import Field, coerce, given_values

__all__ = ["FIELDS", "MAX_ITERATIONS", "OWNER", "XYZ_ATTRS", "InversionArgs", "parse", "xyz_overrides"]

OWNER = "CFG++ inversion"
MAX_ITERATIONS = 20
MAX_CFG = 30.0

FIELDS: tuple[Field, ...] = (
    Field("enabled", "bool", False),
    Field("source_prompt", "text", ""),
    # 0: the generation's own CFG scale (what an exact round trip needs)
    Field("cfg_scale", "number", 0.0, low=0.0, high=MAX_CFG),
    Field("iterations", "int", 0, low=0, high=MAX_ITERATIONS),
)
_BY_NAME = {f.name: f for f in FIELDS}

XYZ_ATTRS = {f"cfgpp_inversion_{f.name}": f.name for f in FIELDS}


@dataclass(frozen=True)
class InversionArgs:
    enabled: bool = False
    source_prompt: str = ""
    cfg_scale: float = 0.0
    iterations: int = 0


def parse(args: Sequence[Any] | None, overrides: Mapping[str, Any] | None = None) -> InversionArgs:
    """Positional args (or one dict in slot 0) plus XYZ overrides -> InversionArgs (ArgsError: one line).

    ``None`` in a slot, and missing trailing slots, mean the default.
    """
    values = {f.name: f.default for f in FIELDS}
    given, named = given_values(FIELDS, args, OWNER)
    given.update(named)
    for name, value in {**given, **(overrides or {})}.items():
        if value is not None:
            values[name] = coerce(_BY_NAME[name], value, OWNER)
    return InversionArgs(**values)


def xyz_overrides(p: Any) -> dict[str, Any]:
    """The ``p.cfgpp_inversion_*`` values an XYZ cell set."""
    return {name: getattr(p, attr) for attr, name in XYZ_ATTRS.items() if getattr(p, attr, None) is not None}
