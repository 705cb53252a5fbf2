"""backend.memory_management: what ``sampling_prepare`` does to the model (dfdcbab :443-541, :552-559,
:614-690).

``load_models_gpu`` loads each patcher that is not loaded yet: ``LoadedModel.model_load`` moves the
model to its device and merges the patcher's LoRA weights (``refresh_loras``, :518); a clone of a
loaded patcher (same model) replaces it (``unload_model_clones``). The model then stays loaded
(``current_loaded_models``) until something else needs the memory. There are no devices here:
"loaded" is the bookkeeping plus the merged weights, which is what a model call before
``sampling_prepare`` would miss.
"""

from __future__ import annotations

current_loaded_models: list[LoadedModel] = []  # most recently used first


class LoadedModel:
    def __init__(self, model):
        self.model = model  # a ModelPatcher

    def __eq__(self, other):
        return self.model is other.model

    def model_load(self):
        self.model.current_device = self.model.load_device
        self.model.refresh_loras()
        return self.model.model


def unload_model_clones(model):
    current_loaded_models[:] = [m for m in current_loaded_models if not model.is_clone(m.model)]


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    for model in models:
        loaded = LoadedModel(model)
        if loaded in current_loaded_models:
            current_loaded_models.remove(loaded)
            current_loaded_models.insert(0, loaded)
            continue
        unload_model_clones(model)
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def is_loaded(module) -> bool:
    """Test helper: is ``module`` (a KModel) the model of a loaded patcher?"""
    return any(m.model.model is module for m in current_loaded_models)
