"""modules.sd_models: checkpoint infos, the loaded model and (re)loading, with model_loaded callbacks.

``available`` maps checkpoint names to model objects. Loading a checkpoint with the same
architecture loads its weights into the loaded object (as the WebUI does); another architecture
swaps the object.
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


class ModelData:
    @property
    def sd_model(self):
        return shared.sd_model


model_data = ModelData()
available: dict = {}  # name -> model object holding that checkpoint's weights


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    current = shared.sd_model
    if info is None or (current is not None and current.sd_checkpoint_info == info):
        return current
    source = available[info.name]
    if current is not None and type(source) is type(current) and source.arch == current.arch:
        current.load_state_dict(source.state_dict())  # in place: the same object, other weights
        current.sd_checkpoint_info = info
    else:
        shared.sd_model = source
    script_callbacks.model_loaded_callback(shared.sd_model)
    return shared.sd_model
