"""SD.Next's scripts API (modules/scripts_manager.py@058a7f0c).

* ``Script``: the A1111-style methods SD.Next calls (:46-211); there is no
  ``process_before_every_sampling`` and no ``before_hr``.
* ``load_scripts()`` clears every callback, then imports each ``scripts/*.py`` of every extension
  with the extension folder on sys.path (:288-328); ``extension_folders`` stands in for SD.Next's
  extension list.
* ``ScriptRunner``: ``initialize_scripts`` keeps AlwaysVisible scripts, sorted by title (:409-438);
  ``setup_ui`` puts the "Script" dropdown first, then each script's components, recording
  ``args_from``/``args_to``, ``api_info``, ``infotext_fields``, ``paste_field_names`` (:443-599);
  every hook reads ``p.per_script_args.get(title, p.script_args[args_from:args_to])`` and reports
  an exception without stopping the generation (:644-754).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NamedTuple

import gradio as gr

from modules import errors, paths, script_callbacks, script_loading
from modules.api import models as api_models

AlwaysVisible = object()


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    parent = None
    name = None
    filename = None
    args_from = 0
    args_to = 0
    alwayson = False
    is_txt2img = False
    is_img2img = False
    api_info = None
    group = None
    infotext_fields = None
    paste_field_names = None
    section = None
    standalone = False
    external = False

    def title(self):
        raise NotImplementedError

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):  # never called by SD.Next (see docs/hosts/sdnext.md)
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def process_images(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def elem_id(self, item_id):
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{self.parent}_{title}_{item_id}"


class ScriptFile(NamedTuple):
    basedir: str
    filename: str
    path: str
    priority: str


class ScriptClassData(NamedTuple):
    script_class: type
    path: str
    basedir: str
    module: Any


scripts_data: list[ScriptClassData] = []
extension_folders: list[str] = []  # the enabled extensions (SD.Next: extensions.active())


def list_scripts(scriptdirname: str, extension: str) -> list[ScriptFile]:
    found = []
    for folder in [paths.script_path, *extension_folders]:  # SD.Next's own scripts, then extensions
        base = os.path.join(folder, scriptdirname)
        if not os.path.isdir(base):
            continue
        for filename in sorted(os.listdir(base)):
            path = os.path.join(base, filename)
            if os.path.splitext(path)[1].lower() == extension and os.path.isfile(path):
                found.append(
                    ScriptFile(folder, filename, path, "0" if folder == paths.script_path else "350")
                )
    return sorted(found, key=lambda f: f.priority + f.path.lower())


def load_scripts() -> None:
    global scripts_txt2img, scripts_img2img, scripts_control
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    syspath = sys.path
    for scriptfile in list_scripts("scripts", ".py"):
        try:
            sys.path = [scriptfile.basedir] + sys.path
            module = script_loading.load_module(scriptfile.path)
            for obj in module.__dict__.values():
                if type(obj) is type and issubclass(obj, Script):
                    scripts_data.append(ScriptClassData(obj, scriptfile.path, scriptfile.basedir, module))
        except Exception as e:
            errors.display(e, f"Load script: {scriptfile.filename}")
        finally:
            sys.path = syspath
    scripts_txt2img = ScriptRunner("txt2img")
    scripts_img2img = ScriptRunner("img2img")
    scripts_control = ScriptRunner("control")


class ScriptRunner:
    def __init__(self, name: str = ""):
        self.name = name
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.alwayson_titles: list[str] = []
        self.infotext_fields: list = []
        self.paste_field_names: list[str] = []
        self.is_img2img = False
        self.inputs: list = [None]

    def add_script(self, script_class: type, path: str, is_img2img: bool, is_control: bool) -> None:
        try:
            script = script_class()
            script.filename = path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.external = not path.startswith(paths.script_path)
            if is_control and script.title() not in ("NudeNet", "IP Adapters", "Remove background"):
                return  # installer.control_extensions
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        except Exception as e:
            errors.display(e, "script")

    def initialize_scripts(self, is_img2img: bool = False, is_control: bool = False) -> None:
        self.scripts.clear()
        self.selectable_scripts.clear()
        self.alwayson_scripts.clear()
        self.infotext_fields.clear()
        self.paste_field_names.clear()
        self.is_img2img = is_img2img
        try:
            ordered = sorted(scripts_data, key=lambda x: x.script_class().title().lower())
        except Exception:
            ordered = scripts_data  # a class that fails to instantiate: unsorted, reported by add_script
        for data in ordered:
            self.add_script(data.script_class, data.path, is_img2img, is_control)

    def setup_ui(self, parent: str = "unknown", accordion: bool = True) -> list:
        self.titles = [s.title() for s in self.selectable_scripts]
        self.alwayson_titles = [s.title() for s in self.alwayson_scripts]
        inputs: list = []

        def create_script_ui(script: Script) -> None:
            script.parent = parent
            script.args_from = script.args_to = len(inputs)
            try:
                controls = script.ui(script.is_img2img)
            except Exception as e:
                errors.display(e, f"Calling script: {script.filename}/ui")
                return
            if controls is None:
                return
            script.name = script.title().lower()
            api_args = []
            for control in controls:
                if not isinstance(control, gr.components.IOComponent):
                    errors.display(TypeError(f"Invalid script control: {control}"), script.filename)
                    continue
                control.custom_script_source = os.path.basename(script.filename)
                arg = api_models.ScriptArg(label=control.label or "")
                for field in ("value", "minimum", "maximum", "step", "choices"):
                    v = getattr(control, field, None)
                    if v is not None:
                        setattr(arg, field, v)
                api_args.append(arg)
            script.api_info = api_models.ItemScript(
                name=script.name, is_img2img=script.is_img2img, is_alwayson=script.alwayson, args=api_args
            )
            if script.infotext_fields is not None:
                self.infotext_fields += script.infotext_fields
            if script.paste_field_names is not None:
                self.paste_field_names += script.paste_field_names
            inputs.extend(controls)
            script.args_to = len(inputs)

        dropdown = gr.Dropdown(
            label="Script", elem_id=f"{parent}_script_list", choices=["None", *self.titles]
        )
        inputs.insert(0, dropdown)
        with (
            gr.Accordion(label="Extensions", elem_id=f"{parent}_script_alwayson") if accordion else gr.Group()
        ):
            for script in self.alwayson_scripts:
                with gr.Group(elem_id=f"{parent}_script_{script.title().lower().replace(' ', '_')}"):
                    create_script_ui(script)
        for script in self.selectable_scripts:
            create_script_ui(script)
        self.inputs = inputs
        return inputs

    def script(self, title: str) -> Script:
        """The script with this title (tests)."""
        return next(s for s in self.scripts if s.title() == title)

    def _each(self, hook: str, p: Any, *extra: Any, **kwargs: Any) -> Any:
        result = None
        for script in self.alwayson_scripts:
            try:
                if script.args_to > 0 and script.args_to >= script.args_from:
                    args = p.per_script_args.get(
                        script.title(), p.script_args[script.args_from : script.args_to]
                    )
                    out = getattr(script, hook)(p, *extra, *args, **kwargs)
                    result = out if out is not None else result
            except Exception as e:
                errors.display(e, f"Running script {hook}: {script.filename}")
        return result

    def before_process(self, p, **kwargs):
        self._each("before_process", p, **kwargs)

    def process(self, p, **kwargs):
        self._each("process", p, **kwargs)

    def process_images(self, p, **kwargs):
        return self._each("process_images", p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._each("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp):
        self._each("postprocess_image", p, pp)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
scripts_control: ScriptRunner | None = None
scripts_current: ScriptRunner | None = None
reload_scripts = load_scripts
