"""A fake WebUI session around the extension's real script files, and tiny real models.

``WebUI.start()`` does what the WebUI does at launch: load the script files (ours and a reduced
xyz_grid.py), register settings, run the before-UI callbacks and build the txt2img/img2img script
UIs; ``reload()`` is "Reload UI"; ``stop()`` unloads. Generations run the fake processing loop on
a real ldm UNet (SD 1.5 block layout, 32 channels) or on a closed-form denoiser.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import gradio
import k_diffusion.external
import torch
import torch.nn.functional as F
from ldm.modules import attention as ldm_attention
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from modules import (
    errors,
    infotext_utils,
    processing,
    script_callbacks,
    scripts,
    sd_models,
    sd_samplers,
    sd_samplers_kdiffusion,
    sd_unet,
    shared,
)

from lib_hidiff import zoo

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT_FILES = [
    os.path.join(REPO, "scripts", "hidiffusion.py"),
    os.path.join(REPO, "scripts", "hidiffusion_cfgpp.py"),
    os.path.join(HERE, "fake_webui", "scripts", "xyz_grid.py"),
]

_BUILTIN_SAMPLERS = list(sd_samplers.all_samplers)
_BUILTIN_EXTRA_PARAMS = dict(sd_samplers_kdiffusion.sampler_extra_params)


@contextlib.contextmanager
def sdpa_attention():
    """Swap ldm's CrossAttention kernel for SDPA (what the WebUI's optimisations do)."""

    def forward(self, x, context=None, mask=None, **kwargs):
        h = self.heads
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, _ = q.shape
        q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)

    saved = ldm_attention.CrossAttention.forward
    ldm_attention.CrossAttention.forward = forward
    try:
        yield
    finally:
        ldm_attention.CrossAttention.forward = saved


# -- models ---------------------------------------------------------------------------------------
def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def tiny_sd15_unet(seed: int = 0) -> UNetModel:
    """A real ldm UNet with the SD 1.5 block layout (12 input / 12 output blocks), 32 channels."""
    return zoo.build_ldm_unet("sd1", 32, heads=4, context_dim=32, seed=seed)


class _Wrapper(torch.nn.Module):
    """ldm's DiffusionWrapper: inpainting models (9 input channels) are "hybrid" -- the image
    conditioning (mask + masked picture's latent) is concatenated to the latent."""

    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = "hybrid" if unet.input_blocks[0][0].in_channels == 9 else "crossattn"


class TinyLatentDiffusion(torch.nn.Module):
    """What the WebUI calls ``sd_model`` for SD 1.x, around a tiny real UNet."""

    def __init__(self, unet: torch.nn.Module, name: str, arch: str = "sd1"):
        super().__init__()
        self.model = _Wrapper(unet)
        self.register_buffer("alphas_cumprod", sd_alphas_cumprod())
        self.parameterization = "eps"
        self.cond_stage_key = "txt"
        self.is_sdxl = self.is_sd3 = False
        self.arch = arch
        self.sd_checkpoint_info = sd_models.CheckpointInfo(name)

    def apply_model(self, x, t, cond):
        if self.model.conditioning_key == "hybrid":  # ldm DiffusionWrapper: cat([x] + c_concat)
            x = torch.cat([x, *cond["c_concat"]], dim=1)
        return self.model.diffusion_model(x, t, context=cond["c_crossattn"][0])


def closed_form_mean(text: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    m = text.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    return m if image is None else m + image.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def closed_form_x0(x: torch.Tensor, sigma: float, m: torch.Tensor) -> torch.Tensor:
    return (x + sigma**2 * m) / (1 + sigma**2)


class ClosedFormDenoiser(torch.nn.Module):
    """k-diffusion-style denoiser with a known x0: data ~ N(m(cond), 1) per row.

    m = mean of the text cond + mean of the image cond (c_concat), and D(x, σ) = (x + σ² m) / (1 + σ²),
    so every row of the CFG batch (cond, uncond, edit models' image-cond third) is told apart.
    """

    def __init__(self):
        super().__init__()
        self.inner = k_diffusion.external.DiscreteSchedule(
            ((1 - sd_alphas_cumprod()) / sd_alphas_cumprod()) ** 0.5, False
        )
        self.calls: list[dict[str, Any]] = []

    @property
    def sigmas(self):
        return self.inner.sigmas

    def get_sigmas(self, n=None):
        return self.inner.get_sigmas(n)

    def forward(self, x, sigma, cond):
        # As the WebUI, a skipped-uncond step trims x but not the image cond: use the leading rows.
        m = closed_form_mean(cond["c_crossattn"][0], cond["c_concat"][0][: x.shape[0]]).to(x.dtype)
        s2 = sigma.view(-1, 1, 1, 1) ** 2
        out = (x + s2 * m) / (1 + s2)
        self.calls.append(
            {"x": x.clone(), "sigma": sigma.clone(), "m": m.flatten().clone(), "out": out.clone()}
        )
        return out


class ClosedFormModel(torch.nn.Module):
    """An sd_model whose CFG denoiser's inner model is :class:`ClosedFormDenoiser` (no UNet)."""

    def __init__(self, name: str = "closed-form", cond_stage_key: str = "txt"):
        super().__init__()
        self.denoiser = ClosedFormDenoiser()
        self.model = torch.nn.Module()
        self.model.conditioning_key = "crossattn"
        self.cond_stage_key = cond_stage_key
        self.parameterization = "eps"
        self.is_sdxl = self.is_sd3 = False
        self.arch = "closed-form"
        self.sd_checkpoint_info = sd_models.CheckpointInfo(name)

    def create_denoiser(self):
        return self.denoiser


class HybridModel(ClosedFormModel):
    """A closed-form denoiser that carries a real UNet it never calls: HiDiffusion installs and
    activates on the UNet exactly as in a real generation, at no compute cost."""

    def __init__(self, unet: torch.nn.Module, name: str = "hybrid", arch: str = "sd1"):
        super().__init__(name)
        self.model.diffusion_model = unet
        self.arch = arch


def tiny_unet(layout: str, seed: int = 0) -> UNetModel:
    """Other block layouts, smallest widths: "sdxl" (3 levels, attention at 1-2), "sd2" (linear
    projections) and "refiner" (the SDXL refiner's layout, which HiDiffusion does not support)."""
    family = {"sdxl": "sdxl", "sd2": "sd2", "refiner": "sdxl_refiner"}[layout]
    depths = {"sdxl": (0, 1, 1), "refiner": (0, 1, 1, 0)}.get(layout)
    return zoo.build_ldm_unet(family, 32, heads=4, context_dim=32, depths=depths, seed=seed)


# -- the WebUI session ------------------------------------------------------------------------------
class FakeApp:
    def __init__(self):
        self.routes: list[Any] = []

    def add_api_route(self, path, endpoint, methods=None):
        route = type("Route", (), {})()
        route.path, route.endpoint, route.methods = path, endpoint, methods
        self.routes.append(route)


class WebUI:
    def __init__(self, cmd_flags: dict | None = None, without_builtin: tuple[str, ...] = ()):
        self.cmd_flags = cmd_flags or {}
        self.without_builtin = without_builtin  # e.g. ("DDIM CFG++",): a WebUI older than 1.10
        self.runners: dict[str, scripts.ScriptRunner] = {}
        self.app = FakeApp()

    # lifecycle
    def start(self):
        shared.reset()
        for k, v in self.cmd_flags.items():
            setattr(shared.cmd_opts, k, v)
        sd_unet.current_unet = None
        sd_models.available.clear()
        errors.reported.clear()
        self._restore_builtin_samplers()
        for name in self.without_builtin:
            sd_samplers.all_samplers.remove(sd_samplers.all_samplers_map.pop(name))
        self._load()
        script_callbacks.app_started_callback(None, self.app)

    def _load(self):
        sd_samplers.set_samplers()
        scripts.load_scripts(SCRIPT_FILES)
        script_callbacks.ui_settings_callback()
        script_callbacks.before_ui_callback()
        gradio.created.clear()
        for tab in ("txt2img", "img2img"):
            runner = scripts.ScriptRunner()
            runner.initialize_scripts(is_img2img=tab == "img2img")
            runner.setup_ui()
            self.runners[tab] = runner

    def reload(self):
        """ "Reload UI": unload callbacks, then re-import the script files with callbacks cleared."""
        script_callbacks.script_unloaded_callback()
        self._load()

    def stop(self):
        script_callbacks.script_unloaded_callback()
        script_callbacks.clear_callbacks()
        self._restore_builtin_samplers()
        shared.sd_model = None

    @staticmethod
    def _restore_builtin_samplers():
        sd_samplers.all_samplers[:] = _BUILTIN_SAMPLERS
        sd_samplers.all_samplers_map.clear()
        sd_samplers.all_samplers_map.update({x.name: x for x in _BUILTIN_SAMPLERS})
        sd_samplers_kdiffusion.sampler_extra_params.clear()
        sd_samplers_kdiffusion.sampler_extra_params.update(_BUILTIN_EXTRA_PARAMS)
        sd_samplers.set_samplers()
        sd_samplers.get_sampler_and_scheduler.cache_clear()

    # scripts
    def script(self, title: str = "HiDiffusion", tab: str = "txt2img") -> scripts.Script:
        return self.runners[tab].script(title)

    def default_args(self, tab: str = "txt2img") -> list:
        """script_args with every component at its UI default (what the API starts from)."""
        return [0] + [getattr(c, "value", None) for c in self.runners[tab].inputs[1:]]

    def script_args(self, hidiffusion: Any = None, tab: str = "txt2img") -> list:
        """Defaults, with the HiDiffusion slots overwritten like the API's alwayson_scripts args."""
        args = self.default_args(tab)
        if hidiffusion is not None:
            script = self.script(tab=tab)
            for i, value in enumerate(list(hidiffusion)[: script.args_to - script.args_from]):
                args[script.args_from + i] = value
        return args

    def xyz(self):
        return next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")

    # generations
    def txt2img(self, hidiffusion: Any = None, **kwargs) -> Any:
        p = self.make_txt2img(hidiffusion, **kwargs)
        return p, processing.process_images(p)

    def make_txt2img(self, hidiffusion: Any = None, **kwargs) -> Any:
        kwargs.setdefault("width", 576)
        kwargs.setdefault("height", 512)
        return processing.StableDiffusionProcessingTxt2Img(
            scripts=self.runners["txt2img"], script_args=self.script_args(hidiffusion), **kwargs
        )

    def img2img(self, hidiffusion: Any = None, **kwargs) -> Any:
        kwargs.setdefault("width", 576)
        kwargs.setdefault("height", 512)
        p = processing.StableDiffusionProcessingImg2Img(
            scripts=self.runners["img2img"],
            script_args=self.script_args(hidiffusion, tab="img2img"),
            **kwargs,
        )
        return p, processing.process_images(p)

    def paste(self, infotext: str, tab: str = "txt2img") -> tuple[dict, list]:
        return infotext_utils.paste_values(infotext, self.runners[tab].infotext_fields)


def hook_count(module: torch.nn.Module) -> int:
    """Forward (pre-)hooks and instance forward overrides anywhere in the module tree."""
    n = 0
    for m in module.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__)
    return n
