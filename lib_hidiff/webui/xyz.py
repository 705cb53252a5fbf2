"""HiDiffusion axes for the built-in X/Y/Z plot script.

Each axis sets a ``p.hidiff_<name>`` attribute on the cell's copy of ``p``; ``process()`` reads it
over the UI value (args.XYZ_ATTRS), so no global state is involved and cells cannot leak into
each other. Added from ``on_before_ui`` (all scripts loaded, XYZ's UI not built yet), once.
"""

from __future__ import annotations

from typing import Any

from lib_hidiff.unet.presets import PRESETS

__all__ = ["AXES", "add_axes", "find_xyz_module"]

# (label, attribute, kind)
AXES: tuple[tuple[str, str, str], ...] = (
    ("[HiDiffusion] Enabled", "hidiff_enabled", "bool"),
    ("[HiDiffusion] Preset", "hidiff_preset", "preset"),
    ("[HiDiffusion] RAU-Net", "hidiff_raunet", "bool"),
    ("[HiDiffusion] MSW-MSA", "hidiff_mswmsa", "bool"),
    ("[HiDiffusion] T1", "hidiff_t1", "fraction"),
    ("[HiDiffusion] T2", "hidiff_t2", "fraction"),
)


def find_xyz_module() -> Any | None:
    """The loaded xyz_grid.py script module (scripts are loaded under their file name)."""
    from modules import scripts

    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid"):
            return data.module
    return None


def _apply_bool(attr: str):
    def apply(p: Any, x: str, xs: Any) -> None:
        setattr(p, attr, str(x).strip().lower() == "true")

    return apply


def _apply_value(attr: str):
    def apply(p: Any, x: Any, xs: Any) -> None:
        setattr(p, attr, x)

    return apply


def _confirm_preset(p: Any, xs: Any) -> None:
    for x in xs:
        if x not in PRESETS:
            raise ValueError(f"[HiDiffusion] Preset value {x!r} is not one of {list(PRESETS)}")


def add_axes() -> int:
    """Append our axes to XYZ's list unless they are there; returns how many were added."""
    xyz = find_xyz_module()
    if xyz is None:
        return 0
    present = {getattr(opt, "label", None) for opt in xyz.axis_options}
    added = 0
    for label, attr, kind in AXES:
        if label in present:
            continue
        if kind == "bool":
            opt = xyz.AxisOption(label, str, _apply_bool(attr), choices=xyz.boolean_choice(reverse=True))
        elif kind == "preset":
            opt = xyz.AxisOption(
                label, str, _apply_value(attr), confirm=_confirm_preset, choices=lambda: list(PRESETS)
            )
        else:
            opt = xyz.AxisOption(label, float, _apply_value(attr), confirm=xyz.confirm_range(0.0, 1.0, label))
        xyz.axis_options.append(opt)
        added += 1
    return added
