"""SD.Next's own HiDiffusion (modules/hidiffusion@058a7f0c), reduced to what another HiDiffusion meets.

* ``apply(p, model_type)`` runs in every pass's ``process_pre``; it first calls ``unapply()``;
  when ``p.hidiffusion`` is on it records ``p.extra_generation_params['HiDiffusion']`` as
  "raunet/attn/aggressive:steps" (__init__.py:36) and patches the UNet by swapping module classes
  for generated subclasses whose class attribute ``_parent`` is the original class, with an
  ``info`` dict (holding hook handles) on each patched module (hidiffusion.py:633-710). It refuses
  a UNet where a module already has ``_parent`` (RuntimeError).
* ``unapply()`` runs in every pass's ``process_post``, HiDiffusion on or not: every UNet module with
  ``_parent`` gets its class back, every module with an ``info`` attribute loses its hooks and
  that attribute (hidiffusion.py:715-726).

Here the patched modules count their calls in ``calls`` (the fake's evidence that it ran).
"""

from __future__ import annotations

from typing import Any

from modules import shared
from modules.logger import log

calls: list[str] = []


def _patched_class(cls: type) -> type:
    def forward(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return cls.forward(self, *args, **kwargs)

    return type(f"HiDiffusion{cls.__name__}", (cls,), {"_parent": cls, "forward": forward})


def _pipe() -> Any:
    return shared.sd_model.pipe if hasattr(shared.sd_model, "pipe") else shared.sd_model


def apply(p: Any, model_type: str) -> None:
    if model_type not in ("sd", "sdxl") and p.hidiffusion:
        log.warning(f"HiDiffusion: class={shared.sd_model.__class__.__name__} not supported")
        return
    unapply()
    pipe = _pipe()
    if getattr(p, "hidiffusion", False) is True:
        o = shared.opts
        p.extra_generation_params["HiDiffusion"] = (
            f"{o.hidiffusion_raunet}/{o.hidiffusion_attn}/{o.hidiffusion_steps > 0}:{o.hidiffusion_steps}"
        )
        unet = pipe.unet
        targets = [unet.down_blocks[0].downsamplers[0]] if unet.down_blocks[0].downsamplers else []
        targets += [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"][:1]
        for module in targets:
            if hasattr(module, "_parent"):
                raise RuntimeError(f"HiDiffusion: module={module.__class__} already patched")
            module.__class__ = _patched_class(module.__class__)
            module.info = {"hooks": [module.register_forward_hook(lambda m, a, o: None)]}
        unet.hidiffusion = True


def unapply() -> None:
    pipe = _pipe()
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return
    for _, module in unet.named_modules():
        while hasattr(module, "_parent"):
            module.__class__ = module._parent
        if hasattr(module, "info"):
            for hook in module.info.get("hooks", []):
                hook.remove()
            module.info["hooks"].clear()
            del module.info
