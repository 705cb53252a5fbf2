"""A fake SD.Next session around the extension's real script files, with tiny real diffusers pipelines.

``SDNext.start()`` does what SD.Next's start does (webui.py@058a7f0c:75-383): list the samplers,
load every ``scripts/*.py`` of the enabled extensions (this repository), register settings, run the
before-UI callbacks, build the txt2img/img2img script UIs and fire app-started. ``reload()`` is a
server restart (script-unloaded callbacks, samplers listed again, scripts re-imported); ``stop()``
unloads. Generations run the fake processing loop on a real ``StableDiffusionPipeline``: tiny CLIP
text encoder, tiny VAE (scale factor 2: 2 px per latent cell) and a real UNet2DConditionModel in SD
1.5's block layout at width 32 (``lib_hidiff.zoo``'s diffusers twin), so the extension's patches
run exactly as in SD.Next.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch
from modules import (
    errors,
    generation_parameters_copypaste,
    hidiffusion,
    logger,
    processing,
    processing_diffusers,
    script_callbacks,
    scripts,
    scripts_manager,
    sd_models,
    sd_samplers,
    sd_samplers_diffusers,
    shared,
)
from modules.api import endpoints, generate

from lib_hidiff import zoo
from tests.diffusers import pipes

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

_BUILTIN_SAMPLERS = list(sd_samplers_diffusers.samplers_data_diffusers)
_BUILTIN_CONFIG = {k: dict(v) for k, v in sd_samplers_diffusers.config.items()}


@functools.cache
def tiny_unet(seed: int = 0) -> torch.nn.Module:
    """A diffusers UNet2DConditionModel with SD 1.5's layout (4 levels), width 32 (cached: read-only)."""
    return zoo.diffusers_twin(zoo.build_ldm_unet("sd1", 32, heads=4, context_dim=32, seed=seed), "sd1")


@functools.cache
def _parts() -> tuple[Any, Any]:
    return pipes.tiny_vae(), pipes.tiny_text_encoder()


def tiny_pipeline(name: str = "tiny-sd15", unet: Any = None, scheduler: str = "PNDMScheduler") -> Any:
    """What SD.Next loads from models/Diffusers/<name>: a StableDiffusionPipeline (+ SD.Next's attributes)."""
    from diffusers import StableDiffusionPipeline

    vae, text_encoder = _parts()
    pipe = StableDiffusionPipeline(
        unet=tiny_unet() if unet is None else unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=None,
        scheduler=pipes.scheduler(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.sd_checkpoint_info = sd_models.CheckpointInfo(name)
    pipe.sd_model_hash = name
    return pipe


class FakeApp:
    def __init__(self):
        self.routes: list[Any] = []

    def add_api_route(self, path, endpoint, methods=None):
        route = type("Route", (), {})()
        route.path, route.endpoint, route.methods = path, endpoint, methods
        self.routes.append(route)


class SDNext:
    def __init__(self, extensions: tuple[str, ...] = (REPO,)):
        self.extensions = list(extensions)
        self.app = FakeApp()
        self._core: dict[str, list] = {}
        self._root_level = logging.getLogger().level

    # lifecycle
    def start(self) -> None:
        shared.reset()
        logger.records.clear()
        logger.setup_logging()
        errors.reported.clear()
        hidiffusion.calls.clear()
        processing_diffusers.calls.clear()
        generate.reset()
        generation_parameters_copypaste.reset()
        self._restore_builtin_samplers()
        scripts_manager.extension_folders[:] = self.extensions
        self._load()
        script_callbacks.app_started_callback(None, self.app)

    def _load(self) -> None:
        sd_samplers.list_samplers()  # webui.py:82, before the extensions load
        scripts_manager.load_scripts()
        scripts.register_runners()
        script_callbacks.before_ui_callback()
        script_callbacks.ui_settings_callback()
        for tab in ("txt2img", "img2img"):
            runner = getattr(scripts_manager, f"scripts_{tab}")
            runner.initialize_scripts(is_img2img=tab == "img2img")
            runner.setup_ui(parent=tab)
        generate.reset()

    def reload(self) -> None:
        """A server restart (webui.py:396-399): unload, then initialize again."""
        script_callbacks.app_reload_callback()
        script_callbacks.script_unloaded_callback()
        self._load()

    def stop(self) -> None:
        script_callbacks.script_unloaded_callback()
        script_callbacks.clear_callbacks()
        self._restore_builtin_samplers()
        sd_samplers.list_samplers()
        shared.sd_model = None
        logging.getLogger().setLevel(self._root_level)

    @staticmethod
    def _restore_builtin_samplers() -> None:
        sd_samplers_diffusers.samplers_data_diffusers[:] = _BUILTIN_SAMPLERS
        sd_samplers_diffusers.config.clear()
        sd_samplers_diffusers.config.update({k: dict(v) for k, v in _BUILTIN_CONFIG.items()})

    # model
    def load_model(self, pipe: Any = None) -> Any:
        pipe = tiny_pipeline() if pipe is None else pipe
        shared.sd_model = sd_models.model_data.sd_model = pipe
        shared.sd_model_type = "sd"
        shared.sd_loaded = True
        script_callbacks.model_loaded_callback(pipe)
        return pipe

    # scripts
    def runner(self, tab: str = "txt2img") -> scripts_manager.ScriptRunner:
        return getattr(scripts_manager, f"scripts_{tab}")

    def script(self, title: str = "HiDiffusion", tab: str = "txt2img") -> scripts_manager.Script:
        return self.runner(tab).script(title)

    def default_args(self, tab: str = "txt2img") -> list:
        return [0] + [getattr(c, "value", None) for c in self.runner(tab).inputs[1:]]

    def script_args(self, ours: Any = None, tab: str = "txt2img") -> list:
        """The UI's values, with our HiDiffusion slots overwritten (``None``: all defaults)."""
        args = self.default_args(tab)
        if ours is not None:
            script = self.script(tab=tab)
            for i, value in enumerate(list(ours)[: script.args_to - script.args_from]):
                args[script.args_from + i] = value
        return args

    # generations (UI path)
    def make_txt2img(self, ours: Any = None, **kwargs: Any) -> Any:
        """``ours``: the extension's HiDiffusion args; ``hidiffusion=`` is SD.Next's own (p.hidiffusion)."""
        kwargs = {
            "prompt": "a cat",
            "negative_prompt": "blurry",
            "width": 32,
            "height": 32,
            "steps": 2,
            "seed": 1,
            "cfg_scale": 7.0,
            **kwargs,
        }
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, **kwargs)
        p.scripts = self.runner("txt2img")
        p.script_args = self.script_args(ours)
        return p

    def txt2img(self, ours: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        p = self.make_txt2img(ours, **kwargs)
        return p, processing.process_images(p)

    def img2img(self, ours: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        from PIL import Image

        width, height = kwargs.get("width", 32), kwargs.get("height", 32)
        kwargs = {
            "prompt": "a cat",
            "negative_prompt": "blurry",
            "width": width,
            "height": height,
            "steps": 4,
            "seed": 1,
            "cfg_scale": 7.0,
            "denoising_strength": 0.5,
            "init_images": [Image.new("RGB", (width, height), (120, 80, 200))],
            **kwargs,
        }
        p = processing.StableDiffusionProcessingImg2Img(sd_model=shared.sd_model, **kwargs)
        p.scripts = self.runner("img2img")
        p.script_args = self.script_args(ours, tab="img2img")
        return p, processing.process_images(p)

    # API
    def api_txt2img(self, **request: Any) -> tuple[Any, Any]:
        request = {
            "prompt": "a cat",
            "negative_prompt": "blurry",
            "width": 32,
            "height": 32,
            "steps": 2,
            "seed": 1,
            "cfg_scale": 7.0,
            **request,
        }
        return generate.post_text2img(request)

    def api_samplers(self) -> list[str]:
        return [s["name"] for s in endpoints.get_samplers()]

    def api_schedulers(self) -> list[str]:
        return [s["name"] for s in endpoints.get_schedulers()]

    # infotext
    def core_fields(self, tab: str = "txt2img") -> list[tuple[Any, str]]:
        """SD.Next's own paste fields that meet ours (ui_txt2img.py@058a7f0c:86-166): the prompt, Steps,
        its built-in HiDiffusion checkbox (:132, ui_sections.py:147) and the sampler dropdown."""
        import gradio as gr

        if tab not in self._core:
            self._core[tab] = [
                (gr.Textbox(label="Prompt", value="", elem_id=f"{tab}_prompt"), "Prompt"),
                (gr.Slider(1, 99, value=20, step=1, label="Steps", elem_id=f"{tab}_steps"), "Steps"),
                (gr.Checkbox(label="HiDiffusion", value=False, elem_id=f"{tab}_hidiffusion"), "HiDiffusion"),
                (gr.Dropdown(label="Sampling method", choices=self.dropdown(), value="Default"), "Sampler"),
            ]
        return self._core[tab]

    def paste(self, infotext: str, tab: str = "txt2img") -> tuple[dict, dict[str, Any], list]:
        """Paste into the tab: (params after callbacks, SD.Next's own fields by key, our fields' values).

        The tab's fields are registered as SD.Next's UI does (add_paste_fields, ui_txt2img.py:167);
        SD.Next's paste handler runs on them as it does when Restore is pressed.
        """
        core = self.core_fields(tab)
        fields = [*core, *self.runner(tab).infotext_fields]
        generation_parameters_copypaste.add_paste_fields(tab, None, fields)
        params, values = generation_parameters_copypaste.paste_values(infotext, fields)
        return params, {key: v for (_, key), v in zip(core, values)}, values[len(core) :]

    def dropdown(self) -> list[str]:
        """The txt2img "Sampling method" choices (ui_sections.py:216-223)."""
        sd_samplers.set_samplers()
        return [x.name for x in sd_samplers.samplers if x.name != "Same as primary"]


def hook_count(module: torch.nn.Module) -> int:
    """Forward (pre-)hooks and instance forward overrides anywhere in the module tree."""
    n = 0
    for m in module.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__)
    return n


def shown(level: int = logging.WARNING) -> list[str]:
    """What SD.Next's console showed."""
    return logger.shown(level)
