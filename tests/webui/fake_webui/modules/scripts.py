"""modules.scripts: Script, AlwaysVisible, scripts_data, load_scripts and a ScriptRunner.

The runner records each script's arg slice and calls hooks with ``p.script_args[args_from:args_to]``,
catching and reporting exceptions like the WebUI (a failing hook never stops the generation).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections import namedtuple

from modules import errors, script_callbacks, script_loading

AlwaysVisible = object()

ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class OnComponent:
    """What an on_after_component callback receives (1.10: a dataclass with ``component``)."""

    def __init__(self, component):
        self.component = component


class Script:
    on_after_component_elem_id = None
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    create_group = True
    infotext_fields = None
    paste_field_names = None
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabname = ("img2img" if self.is_img2img else "txt2img") + "_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


def load_scripts(script_files):
    """Clear callbacks and scripts_data, then import each script file with its extension dir on sys.path."""
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    syspath = sys.path
    for path in script_files:
        basedir = os.path.dirname(os.path.dirname(path))
        try:
            sys.path = [basedir] + sys.path
            module = script_loading.load_module(path)
            for obj in module.__dict__.values():
                if inspect.isclass(obj) and issubclass(obj, Script) and obj is not Script:
                    scripts_data.append(ScriptClassData(obj, path, basedir, module))
        except Exception:
            errors.report(f"Error loading script: {path}", exc_info=True)
        finally:
            sys.path = syspath


class ScriptRunner:
    def __init__(self):
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.inputs: list = [None]
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.on_after_component_elem_id: dict = {}

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
        self.on_after_component_elem_id = {}
        for script in self.scripts:
            for elem_id, callback in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))

    def after_component(self, component):
        """The UI created ``component``: run the callbacks scripts registered for its elem_id."""
        for callback, _script in self.on_after_component_elem_id.get(getattr(component, "elem_id", None), []):
            callback(OnComponent(component=component))

    def setup_ui(self):
        import gradio as gr

        for script in self.alwayson_scripts:
            script.args_from = script.args_to = len(self.inputs)
            with gr.Blocks():
                controls = script.ui(script.is_img2img)
            script.controls = controls
            if controls is None:
                continue
            script.name = script.title().lower()
            if script.infotext_fields is not None:
                self.infotext_fields += script.infotext_fields
            if script.paste_field_names is not None:
                self.paste_field_names += script.paste_field_names
            self.inputs += controls
            script.args_to = len(self.inputs)
        return self.inputs

    def script(self, title):
        return next((s for s in self.scripts if s.title().lower() == title.lower()), None)

    def _each(self, hook, p, *extra, **kwargs):
        if not hasattr(Script, hook):  # a WebUI from before the hook existed never calls it
            return
        for script in self.alwayson_scripts:
            if getattr(type(script), hook) is getattr(Script, hook):
                continue
            try:
                args = p.script_args[script.args_from : script.args_to]
                getattr(script, hook)(p, *extra, *args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._each("before_hr", p)

    def on_mask_blend(self, p, mba):
        for script in self.alwayson_scripts:
            if type(script).on_mask_blend is Script.on_mask_blend:
                continue
            script.on_mask_blend(p, mba, *p.script_args[script.args_from : script.args_to])

    def postprocess(self, p, processed):
        for script in self.alwayson_scripts:
            if type(script).postprocess is Script.postprocess:
                continue
            try:
                script.postprocess(p, processed, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running postprocess: {script.filename}", exc_info=True)
