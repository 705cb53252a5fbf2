"""HiDiffusion for the AUTOMATIC1111 WebUI: the "HiDiffusion" accordion (an AlwaysOn script).

Glue only; the logic lives in lib_hidiff/webui. Every WebUI callback is registered here, because
"Reload UI" clears callbacks and re-runs script files but keeps library modules loaded.
"""

from modules import script_callbacks, scripts

from lib_hidiff.webui import generation, hint, host, settings, ui, xyz

ACTIVE = host.active()  # False on SD.Next / Forge, or with --hidiffusion-disable (logged once)


class HiDiffusionScript(scripts.Script):
    def title(self):
        return "HiDiffusion"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if ACTIVE else False

    def ui(self, is_img2img):
        components, self.infotext_fields, self.paste_field_names = ui.build(self, is_img2img)
        return components

    def process(self, p, *args):
        generation.process(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        generation.before_sampling(p)

    if not hasattr(scripts.Script, "process_before_every_sampling"):  # WebUI < 1.10

        def process_batch(self, p, *args, **kwargs):
            generation.before_sampling(p)

        def before_hr(self, p, *args):
            generation.before_sampling(p)

    def postprocess(self, p, processed, *args):
        generation.postprocess(p)


if ACTIVE:
    script_callbacks.on_cfg_denoiser(generation.on_cfg_denoiser)
    script_callbacks.on_model_loaded(generation.on_model_loaded)
    script_callbacks.on_script_unloaded(generation.on_unload)
    script_callbacks.on_before_ui(xyz.add_axes)
    script_callbacks.on_ui_settings(settings.add_hidiffusion_options)
    script_callbacks.on_app_started(hint.add_route)
