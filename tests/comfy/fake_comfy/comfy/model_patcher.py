"""comfy/model_patcher.py (a125cd84): the ModelPatcher parts the nodes use -- clone (:284-340: the same
``model``, copied options and wrapper lists), the wrapper API (:934-953) and get_model_object."""

from __future__ import annotations

import copy

import comfy.patcher_extension


def set_model_options_post_cfg_function(model_options, post_cfg_function, disable_cfg1_optimization=False):
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [
        post_cfg_function
    ]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def create_model_options_clone(orig_model_options):
    return comfy.patcher_extension.copy_nested_dicts(orig_model_options)


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.model_options = {"transformer_options": {}}
        self.wrappers: dict = {}
        self.callbacks: dict = {}
        self.object_patches: dict = {}
        self.parent = None

    def clone(self):
        n = self.__class__(self.model, self.load_device, self.offload_device)
        n.model_options = copy.deepcopy(self.model_options)
        n.object_patches = self.object_patches.copy()
        n.parent = self
        for k, w in self.wrappers.items():
            n.wrappers[k] = {k1: list(w1) for k1, w1 in w.items()}
        return n

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def model_dtype(self):
        return next(self.model.parameters()).dtype

    def add_wrapper_with_key(self, wrapper_type, key, wrapper):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type, key):
        w = self.wrappers.get(wrapper_type, {})
        if key in w:
            w.pop(key)

    def get_wrappers(self, wrapper_type, key):
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type):
        return [w for ws in self.wrappers.get(wrapper_type, {}).values() for w in ws]

    def pre_run(self):
        self.model.current_patcher = self

    def cleanup(self):
        self.model.current_patcher = None
