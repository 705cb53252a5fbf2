"""backend.patcher.base: ModelPatcher (dfdcbab base.py:51-200) -- clones share ``model``, deep-copy
``model_options``; patches are entries of ``model_options["transformer_options"]["patches"]``."""

from __future__ import annotations

import copy


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.size = size
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device, self.offload_device, self.current_device = (
            load_device,
            offload_device,
            current_device,
        )

    def clone(self):
        n = type(self).__new__(type(self))
        ModelPatcher.__init__(
            n, self.model, self.load_device, self.offload_device, self.size, self.current_device
        )
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def has_online_lora(self):
        return False

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape)

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        options = self.model_options
        options["sampler_post_cfg_function"] = options.get("sampler_post_cfg_function", []) + [
            post_cfg_function
        ]
        if disable_cfg1_optimization:
            options["disable_cfg1_optimization"] = True

    def set_model_patch(self, patch, name):
        to = self.model_options["transformer_options"]
        to.setdefault("patches", {})
        to["patches"][name] = to["patches"].get(name, []) + [patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        to = self.model_options["transformer_options"]
        table = to.setdefault("patches_replace", {}).setdefault(name, {})
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        table[key] = patch

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn1_output_patch(self, patch):
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_input_block_patch(self, patch):
        self.set_model_patch(patch, "input_block_patch")

    def set_model_output_block_patch(self, patch):
        self.set_model_patch(patch, "output_block_patch")

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj
