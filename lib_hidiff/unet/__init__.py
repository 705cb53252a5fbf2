"""HiDiffusion (RAU-Net + MSW-MSA) on ldm / sgm and diffusers UNets: layout, operators, presets, patcher."""

from .layout import FAMILY_MAPS, UNetLayout, UnsupportedUNet, inspect_unet
from .patcher import Installation, apply_hidiffusion, install, installed, uninstall, uninstall_all
from .presets import OFFICIAL_ROWS, PRESETS, HiDiffusionSettings, SettingsError

__all__ = [
    "FAMILY_MAPS",
    "OFFICIAL_ROWS",
    "PRESETS",
    "HiDiffusionSettings",
    "Installation",
    "SettingsError",
    "UNetLayout",
    "UnsupportedUNet",
    "apply_hidiffusion",
    "inspect_unet",
    "install",
    "installed",
    "uninstall",
    "uninstall_all",
]
