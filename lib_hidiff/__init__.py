"""sd-webui-hidiffusion's pure-torch library: HiDiffusion for ldm/sgm and diffusers UNets, CFG++ samplers.

Never imports the WebUI. Public names are resolved lazily so that ``import lib_hidiff.cfgpp`` does
not pay for the UNet code and vice versa.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "inspect_unet": "lib_hidiff.unet.layout",
    "UNetLayout": "lib_hidiff.unet.layout",
    "UnsupportedUNet": "lib_hidiff.unet.layout",
    "HiDiffusionSettings": "lib_hidiff.unet.presets",
    "SettingsError": "lib_hidiff.unet.presets",
    "PRESETS": "lib_hidiff.unet.presets",
    "apply_hidiffusion": "lib_hidiff.unet.patcher",
    "install": "lib_hidiff.unet.patcher",
    "uninstall": "lib_hidiff.unet.patcher",
    "uninstall_all": "lib_hidiff.unet.patcher",
    "installed": "lib_hidiff.unet.patcher",
}

__all__ = [*_EXPORTS, "cfgpp", "diffusers", "unet"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("cfgpp", "diffusers", "unet", "webui"):
        return importlib.import_module(f"lib_hidiff.{name}")
    raise AttributeError(f"module 'lib_hidiff' has no attribute {name!r}")
