"""Other WebUI features that meet HiDiffusion, each with one message and a defined behaviour.

* SD3 (an MMDiT, no UNet) and a replacement UNet (``sd_unet``, e.g. TensorRT): HiDiffusion's
  patches would never run -> the generation runs without HiDiffusion.
* Hypertile U-Net tiles the same self-attention layers MSW-MSA windows, and token merging merges
  their tokens first -> MSW-MSA is off for that pass; RAU-Net still runs.
"""

from __future__ import annotations

from typing import Any

from lib_hidiff.unet.presets import HiDiffusionSettings

__all__ = ["adjust", "blocking"]


def blocking(sd_model: Any) -> str | None:
    """Why HiDiffusion cannot act on this model at all, or None."""
    if getattr(sd_model, "is_sd3", False):
        return "HiDiffusion: SD3 models have no UNet; generating without HiDiffusion"
    try:
        from modules import sd_unet
    except ImportError:
        return None
    current = getattr(sd_unet, "current_unet", None)
    if current is not None:
        label = getattr(getattr(current, "option", None), "label", type(current).__name__)
        return (
            f"HiDiffusion: the UNet is replaced by {label!r} (Settings > SD Unet), which HiDiffusion "
            "cannot patch; generating without HiDiffusion"
        )
    return None


def _opt(name: str) -> Any:
    from modules import shared

    return (getattr(getattr(shared, "opts", None), "data", None) or {}).get(name)


def adjust(p: Any, settings: HiDiffusionSettings, is_hr: bool) -> tuple[HiDiffusionSettings, list[str]]:
    """Settings for this pass after the conflicts above, and the messages to show."""
    if not settings.mswmsa:
        return settings, []
    if _opt("hypertile_enable_unet") or (is_hr and _opt("hypertile_enable_unet_secondpass")):
        return settings.replace(mswmsa=False), [
            "HiDiffusion: Hypertile U-Net tiles the same self-attention layers as MSW-MSA; "
            "MSW-MSA is off, RAU-Net stays on"
        ]
    ratio = 0.0
    get_ratio = getattr(p, "get_token_merging_ratio", None)
    if get_ratio is not None:
        ratio = float(get_ratio(for_hr=is_hr) or 0.0)
    if ratio > 0:
        return settings.replace(mswmsa=False), [
            f"HiDiffusion: token merging (ratio {ratio:g}) merges the tokens MSW-MSA windows; "
            "MSW-MSA is off, RAU-Net stays on"
        ]
    return settings, []
