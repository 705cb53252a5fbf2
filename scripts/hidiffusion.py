"""HiDiffusion in the WebUI: the "HiDiffusion" accordion (an AlwaysOn script), on every host.

Glue only; the logic lives in lib_hidiff/webui, and what differs per WebUI in its host adapter
(lib_hidiff/webui/hosts). Every WebUI callback is registered here, because "Reload UI" clears
callbacks and re-runs script files but keeps library modules loaded.
"""

from modules import script_callbacks, scripts

from lib_hidiff.webui import generation, hint, hosts, settings, ui, xyz

ACTIVE = hosts.active()  # False with --hidiffusion-disable or on an unsupported WebUI (logged once)


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

    # The host adapter says which of these hooks starts a sampling pass.
    def process_before_every_sampling(self, p, *args, **kwargs):
        generation.pass_event(p, "process_before_every_sampling")

    def process_batch(self, p, *args, **kwargs):
        generation.pass_event(p, "process_batch")

    def before_hr(self, p, *args):
        generation.pass_event(p, "before_hr")

    def postprocess(self, p, processed, *args):
        generation.postprocess(p)


if ACTIVE:
    hosts.current().connect()
    script_callbacks.on_script_unloaded(generation.on_unload)
    script_callbacks.on_before_ui(xyz.add_axes)
    script_callbacks.on_ui_settings(settings.add_hidiffusion_options)
    script_callbacks.on_app_started(hint.add_route)
