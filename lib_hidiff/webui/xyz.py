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


OURS = "hidiffusion_axis"  # marks our AxisOption objects (reloads must not add them twice)


def find_xyz_module() -> Any | None:
    """The loaded xyz_grid.py script module (scripts are loaded under their file name)."""
    from modules import scripts

    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid"):  # SD.Next: the same file name
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


def _confirm_range(low: float, high: float, label: str):
    def confirm(p: Any, xs: Any) -> None:
        for x in xs:
            if not low <= float(x) <= high:
                raise ValueError(f"{label} value {x} must be within [{low}, {high}]")

    return confirm


def add_axes() -> int:
    """Append our axes to XYZ's list unless they are there; returns how many were added."""
    xyz = find_xyz_module()
    if xyz is None:
        return 0
    ours = {getattr(opt, "label", None) for opt in xyz.axis_options if getattr(opt, OURS, False)}
    taken = {getattr(opt, "label", None) for opt in xyz.axis_options} - ours
    # SD.Next's XYZ has neither helper (scripts/xyz/xyz_grid_classes.py@058a7f0c): same behaviour here.
    boolean_choice = getattr(xyz, "boolean_choice", None)
    bool_choices = boolean_choice(reverse=True) if boolean_choice else (lambda: ["True", "False"])
    confirm_range = getattr(xyz, "confirm_range", _confirm_range)
    # SD.Next's own HiDiffusion has "[HiDiffusion] T1" / "T2" axes (its settings): where any of our
    # labels is taken, all of ours say "[HiDiffusion extension]", so no "[HiDiffusion] ..." axis of
    # ours sits beside one that drives the host's HiDiffusion
    clash = any(label in taken for label, _, _ in AXES)
    added = 0
    for label, attr, kind in AXES:
        if clash:
            label = label.replace("[HiDiffusion]", "[HiDiffusion extension]")
        if label in ours:
            continue
        if kind == "bool":
            opt = xyz.AxisOption(label, str, _apply_bool(attr), choices=bool_choices)
        elif kind == "preset":
            opt = xyz.AxisOption(
                label, str, _apply_value(attr), confirm=_confirm_preset, choices=lambda: list(PRESETS)
            )
        else:
            opt = xyz.AxisOption(label, float, _apply_value(attr), confirm=confirm_range(0.0, 1.0, label))
        setattr(opt, OURS, True)
        xyz.axis_options.append(opt)
        added += 1
    return added
