"""A fake Forge 2.x session around the extension's real script files, and tiny real models.

``ForgeUI.start()`` does what Forge does at launch (load the script files -- ours and the A1111
fake's reduced xyz_grid.py, which Forge keeps -- register settings, run the before-UI callbacks,
build the txt2img/img2img script UIs); ``reload()`` is "Reload UI"; ``stop()`` unloads.
Generations run the fake Forge processing loop on an engine whose UnetPatcher holds a KModel:
a tiny real UNet in Forge's layout (:func:`forge_unet`, the same weights as the zoo's ldm UNet) or a
closed-form denoiser (:class:`ClosedFormKModel`).
"""

from __future__ import annotations

import os
from typing import Any

import gradio
import torch
from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.modules.k_model import KModel
from backend.modules.k_prediction import Prediction
from backend.nn.unet import from_ldm
from backend.patcher.unet import UnetPatcher
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
SCRIPT_FILES = [  # Forge loads its built-in extensions first
    os.path.join(HERE, "fake_forge", "extensions-builtin", "sd_forge_controlnet", "scripts", "controlnet.py"),
    os.path.join(REPO, "scripts", "hidiffusion.py"),
    os.path.join(REPO, "scripts", "hidiffusion_cfgpp.py"),
    os.path.join(REPO, "tests", "webui", "fake_webui", "scripts", "xyz_grid.py"),
]

_BUILTIN_SAMPLERS = list(sd_samplers.all_samplers)
_BUILTIN_EXTRA_PARAMS = dict(sd_samplers_kdiffusion.sampler_extra_params)


# -- models ---------------------------------------------------------------------------------------
def ldm_sd15_unet(seed: int = 0) -> torch.nn.Module:
    """The zoo's real ldm UNet, SD 1.5 block layout, 32 channels (what the A1111 tests run)."""
    return zoo.build_ldm_unet("sd1", 32, heads=4, context_dim=32, seed=seed)


def forge_unet(ldm_unet: torch.nn.Module) -> torch.nn.Module:
    """Forge's IntegratedUNet2DConditionModel layout with the same weights as ``ldm_unet``."""
    return from_ldm(ldm_unet).eval()


class ClosedFormKModel(KModel):
    """A KModel whose x0 is known: data ~ N(m, 1) with m the mean of the row's text cond, so
    D(x, σ) = (x + σ² m) / (1 + σ²) for every row (cond and uncond told apart). It may carry a
    real UNet it never calls: HiDiffusion installs and opens on it as in a real generation."""

    def __init__(self, unet: torch.nn.Module | None = None):
        super().__init__(unet, Prediction())
        self.calls: list[dict[str, Any]] = []

    def apply_model(
        self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs
    ):
        m = closed_form_mean(c_crossattn).to(x.dtype)
        s2 = t.view(-1, 1, 1, 1) ** 2
        out = (x + s2 * m) / (1 + s2)
        self.calls.append({"x": x.clone(), "sigma": t.clone(), "m": m.flatten().clone(), "out": out.clone()})
        return out


def closed_form_mean(text: torch.Tensor) -> torch.Tensor:
    return text.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def closed_form_x0(x: torch.Tensor, sigma: float, m: torch.Tensor) -> torch.Tensor:
    return (x + sigma**2 * m) / (1 + sigma**2)


class Engine(ForgeDiffusionEngine):
    """``shared.sd_model`` on Forge: forge_objects with a UnetPatcher around a KModel."""

    def __init__(self, kmodel: KModel, name: str = "base", kind: str = "sd1"):
        super().__init__(ForgeObjects(UnetPatcher(kmodel), None, None, None))
        self.is_sd1, self.is_sd2, self.is_sdxl = kind == "sd1", kind == "sd2", kind == "sdxl"
        unet = getattr(kmodel, "diffusion_model", None)  # base.py:28: the loader's inpaint_model()
        self.is_inpaint = unet is not None and unet.input_blocks[0][0].in_channels == 9
        self.sd_checkpoint_info = sd_models.CheckpointInfo(name)


def unet_engine(unet: torch.nn.Module, name: str = "base", kind: str = "sd1") -> Engine:
    return Engine(KModel(unet, Prediction()), name, kind)


def hybrid_engine(unet: torch.nn.Module | None, name: str = "hybrid") -> Engine:
    return Engine(ClosedFormKModel(unet), name)


def hook_count(module: torch.nn.Module) -> int:
    """Forward (pre-)hooks and instance forward overrides anywhere in the module tree."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__)
        for m in module.modules()
    )


# -- the Forge session ------------------------------------------------------------------------------
class FakeApp:
    def __init__(self):
        self.routes: list[Any] = []

    def add_api_route(self, path, endpoint, methods=None):
        route = type("Route", (), {})()
        route.path, route.endpoint, route.methods = path, endpoint, methods
        self.routes.append(route)


class ForgeUI:
    def __init__(self, cmd_flags: dict | None = None):
        self.cmd_flags = cmd_flags or {}
        self.runners: dict[str, scripts.ScriptRunner] = {}
        self.app = FakeApp()

    def start(self):
        shared.reset()
        for k, v in self.cmd_flags.items():
            setattr(shared.cmd_opts, k, v)
        sd_models.reset()
        memory_management.current_loaded_models.clear()
        sd_unet.current_unet = None
        errors.reported.clear()
        self._restore_builtin_samplers()
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
        sd_models.reset()
        memory_management.current_loaded_models.clear()
        shared.sd_model = None

    @staticmethod
    def _restore_builtin_samplers():
        sd_samplers.all_samplers[:] = _BUILTIN_SAMPLERS
        sd_samplers.all_samplers_map = {x.name: x for x in _BUILTIN_SAMPLERS}
        sd_samplers_kdiffusion.sampler_extra_params.clear()
        sd_samplers_kdiffusion.sampler_extra_params.update(_BUILTIN_EXTRA_PARAMS)
        sd_samplers.set_samplers()
        sd_samplers.get_sampler_and_scheduler.cache_clear()

    # models
    def load(self, name: str, factory) -> Any:
        """Put a checkpoint in models/ and select it (Forge loads it at the next generation)."""
        sd_models.available[name] = factory
        sd_models.select_checkpoint(name)
        return sd_models.forge_model_reload()[0]

    # scripts
    def script(self, title: str = "HiDiffusion", tab: str = "txt2img") -> scripts.Script:
        return self.runners[tab].script(title)

    def script_args(self, hidiffusion: Any = None, tab: str = "txt2img", controlnet: Any = None) -> list:
        """UI defaults, with the HiDiffusion (and ControlNet unit) slots overwritten like the API's
        alwayson_scripts args."""
        args = [0] + [getattr(c, "value", None) for c in self.runners[tab].inputs[1:]]
        for title, values in (("HiDiffusion", hidiffusion), ("ControlNet", controlnet)):
            if values is not None:
                script = self.script(title, tab=tab)
                for i, value in enumerate(list(values)[: script.args_to - script.args_from]):
                    args[script.args_from + i] = value
        return args

    def xyz(self):
        return next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")

    # generations
    def make_txt2img(self, hidiffusion: Any = None, controlnet: Any = None, **kwargs) -> Any:
        kwargs.setdefault("width", 576)
        kwargs.setdefault("height", 512)
        return processing.StableDiffusionProcessingTxt2Img(
            scripts=self.runners["txt2img"],
            script_args=self.script_args(hidiffusion, controlnet=controlnet),
            **kwargs,
        )

    def txt2img(self, hidiffusion: Any = None, controlnet: Any = None, **kwargs) -> Any:
        p = self.make_txt2img(hidiffusion, controlnet, **kwargs)
        return p, processing.process_images(p)

    def img2img(self, hidiffusion: Any = None, controlnet: Any = None, **kwargs) -> Any:
        kwargs.setdefault("width", 576)
        kwargs.setdefault("height", 512)
        p = processing.StableDiffusionProcessingImg2Img(
            scripts=self.runners["img2img"],
            script_args=self.script_args(hidiffusion, "img2img", controlnet),
            **kwargs,
        )
        return p, processing.process_images(p)

    def paste(self, infotext: str, tab: str = "txt2img") -> tuple[dict, list]:
        return infotext_utils.paste_values(infotext, self.runners[tab].infotext_fields)
