"""modules.sd_models: Forge's model loading (dfdcbab sd_models.py:456-520).

``forge_model_reload()`` builds a **new** engine object whenever the loading parameters changed
(checkpoint, additional modules, storage dtype) and fires ``on_model_loaded``; otherwise it returns
the loaded one. ``available`` maps checkpoint names to factories building that checkpoint's engine
(a reload never reuses the old UNet object). ``apply_token_merging`` swaps in a patched clone.
"""

from __future__ import annotations

from dataclasses import dataclass

from modules import script_callbacks, shared


@dataclass(frozen=True)
class CheckpointInfo:
    name: str

    @property
    def filename(self):
        return f"/models/{self.name}.safetensors"

    @property
    def short_title(self):
        return self.name


class SdModelData:
    """Forge's ``shared.sd_model`` *is* ``model_data.sd_model`` (here the other way round)."""

    def __init__(self):
        self.forge_loading_parameters: dict | None = None  # None: keep whatever shared.sd_model is
        self.forge_hash = None

    @property
    def sd_model(self):
        return shared.sd_model

    def get_sd_model(self):
        return shared.sd_model

    def set_sd_model(self, v):
        shared.sd_model = v


model_data = SdModelData()
available: dict = {}  # checkpoint name -> factory() -> engine
checkpoint_aliases: dict = {}


def select_checkpoint(name: str, **more) -> None:
    """main_entry.checkpoint_change + refresh_model_loading_parameters."""
    model_data.forge_loading_parameters = {"checkpoint_info": CheckpointInfo(name), **more}


def forge_model_reload():
    params = model_data.forge_loading_parameters
    if params is None or model_data.forge_hash == str(params):
        return shared.sd_model, False
    sd_model = available[params["checkpoint_info"].name]()
    sd_model.sd_checkpoint_info = params["checkpoint_info"]
    model_data.forge_hash = str(params)
    model_data.set_sd_model(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model, True


def apply_token_merging(sd_model, token_merging_ratio):
    """Forge's ToMe: a clone of the patcher with an attn1 patch (tomesd merges the tokens; here the
    patch hands back n, context and value unchanged, which is what an attn1 patch sees)."""
    if token_merging_ratio <= 0:
        return
    unet = sd_model.forge_objects.unet.clone()
    unet.set_model_attn1_patch(lambda n, context, value, extra_options: (n, context, value))
    sd_model.forge_objects.unet = unet


def reset():
    model_data.__init__()
    available.clear()
