"""What one WebUI host must tell the shared glue: the Host interface.

Everything the A1111-family WebUIs share -- arguments, infotext, the accordion, XYZ axes,
settings, messages, the generation lifecycle (lib_hidiff/webui/generation.py) and the CFG++
sampler bookkeeping (samplers.py) -- is written once. A host adapter (one file in this package)
answers only what truly differs: where the UNet of a pass is, which script hooks open a sampling
pass, where the step clock comes from, how CFG++ samplers are registered and how they get the
unconditional prediction, and where messages go.

The defaults below are the A1111 1.10 ones that forks keep (Forge included): a subclass overrides
what its host changes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:  # install.py imports the adapters in the WebUI's launcher: no torch at import
    import torch.nn as nn

    from lib_hidiff import cfgpp
    from lib_hidiff import unet as hd

__all__ = ["Host", "log", "missing_features"]

log = logging.getLogger("hidiffusion")

T = TypeVar("T")


def missing_features(webui_root: str, features: dict[tuple[str, ...], str]) -> list[str]:
    """The files of ``features`` ({path parts: text it must contain}) that lack their text (install.py).

    Forks keep the code, not the version tags: what a WebUI can do is read from its files.
    """
    missing = []
    for parts, needle in features.items():
        try:
            with open(os.path.join(webui_root, *parts), encoding="utf-8") as f:
                if needle not in f.read():
                    missing.append("/".join(parts))
        except OSError:
            missing.append("/".join(parts))
    return missing


class Host:
    """One WebUI host. Instances are stateless apart from what a subclass documents."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = "WebUI"

    # Script hooks (scripts/hidiffusion.py forwards each to generation.pass_event) after which a
    # sampling pass starts. A1111 1.10+: process_before_every_sampling runs before the base pass
    # and again before the hires pass.
    pass_events: ClassVar[frozenset[str]] = frozenset({"process_before_every_sampling"})

    # The img2img "CFG++ inversion" (lib_hidiff/webui/inversion.py) needs the A1111 img2img
    # sampling path and a CFG++ denoiser built by ``sampler_classes()``.
    cfgpp_inversion: ClassVar[bool] = False

    def inversion_job(self, p: Any) -> bool:
        """Can the CFG++ inversion serve ``p`` (an img2img job)? A1111 family: it has an init latent."""
        return hasattr(p, "init_latent")

    # -- detection ---------------------------------------------------------------------------------
    @classmethod
    def detect(cls) -> bool:
        """Is the running WebUI this host? (imports only what is already importable)"""
        return False

    @classmethod
    def detect_root(cls, webui_root: str) -> bool:
        """Is the WebUI folder ``webui_root`` this host? (install.py: no WebUI modules loaded)"""
        return False

    @classmethod
    def install_problems(cls, webui_root: str, torch_version: str | None, tag: str | None) -> list[str]:
        """One line per problem install.py should print for this host (empty: all fine)."""
        return []

    # -- messages ----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Show a message in the host's console."""
        log.warning(message)

    def report(self, p: Any, message: str) -> None:
        """Show a message to whoever asked for the generation: under the image and to API callers."""
        from ..messages import deliver

        deliver(p, message)

    # -- HiDiffusion ---------------------------------------------------------------------------------
    def unet(self, sd_model: Any) -> nn.Module | None:
        """The UNet module a generation with ``sd_model`` runs (None: the model has none)."""
        return None

    def layout(self, sd_model: Any, unet: nn.Module) -> hd.UNetLayout:
        """The UNet's HiDiffusion layout with this model's native size (raises hd.UnsupportedUNet)."""
        from lib_hidiff import unet as hd

        layout = hd.inspect_unet(unet)
        if layout.family == "sd2" and self.v_prediction(sd_model):
            layout = layout.with_native(96)  # SD 2.x 768-v models are native at 768 px
        return layout

    def v_prediction(self, sd_model: Any) -> bool:
        return getattr(sd_model, "parameterization", "eps") == "v"

    def blocking(self, p: Any) -> str | None:
        """Why HiDiffusion cannot act in this generation at all (one line), or None."""
        return None

    def adjust(self, p: Any, settings: hd.HiDiffusionSettings, is_hr: bool) -> tuple[hd.HiDiffusionSettings, list[str]]:
        """Settings for this pass after host features that meet HiDiffusion, and messages to show."""
        return settings, []

    def is_hires_pass(self, p: Any) -> bool:
        return bool(getattr(p, "is_hr_pass", False))

    def model_calls(self, sampler: str | None, steps: int) -> int:
        """Ticks of this host's step clock in a pass of ``steps`` sampler steps (the schedule hint).

        A1111 family: the CFG denoiser counts model calls, so second-order samplers tick more often
        (``SamplerData.total_steps``).
        """
        from modules import sd_samplers

        find = getattr(sd_samplers, "find_sampler_config", None)
        config = find(sampler) if callable(find) else None
        if config is None and sampler and callable(find):  # an alias ("k_euler_a") or another spelling
            name = getattr(sd_samplers, "samplers_map", {}).get(sampler.lower())
            config = find(name) if name else None
        total_steps = getattr(config, "total_steps", None)
        return int(total_steps(steps)) if callable(total_steps) else steps

    def checkpoint(self, sd_model: Any) -> Any:
        """Which checkpoint ``sd_model`` holds: a pass closes when another one takes over (refiner)."""
        info = getattr(sd_model, "sd_checkpoint_info", None)
        return getattr(info, "filename", info)

    def connect(self) -> None:
        """Register the host's own WebUI callbacks (the step clock, model loads)."""

    def paste_fields(self, fields: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """The accordion's (component, key or paste function) pairs as this host's paste needs them."""
        return fields

    # -- CFG++ samplers -------------------------------------------------------------------------------
    def register_samplers(self, infos: tuple[cfgpp.SamplerInfo, ...]) -> list[str]:
        """Put the CFG++ samplers in the host's sampler list; returns the names provided by us."""
        return []

    def unregister_samplers(self) -> None:
        """Take them out again (script unload; registration runs anew after a reload)."""

    def registered_samplers(self) -> list[str]:
        """The display names of the samplers this adapter registered and still provides."""
        return []

    # -- CFG++ inversion (img2img) ------------------------------------------------------------------
    def inversion_blocking(self, p: Any) -> str | None:
        """Why this host cannot invert for this img2img pass (one line), or None.

        Asked at ``process_before_every_sampling``, with ``p.sampler`` created."""
        return None

    def run_inversion(self, p: Any, invert: Callable[[], T]) -> T | None:
        """Call ``invert`` where the sampler's model is ready and before the sampler builds its start
        latent from the noise (``invert`` overwrites that noise in place). A1111 1.10 loads the
        model before ``process_before_every_sampling``: now. Returns what ``invert`` returned, or
        None when the host runs it later."""
        return invert()
