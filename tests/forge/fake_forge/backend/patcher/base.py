"""backend.patcher.base: ModelPatcher (dfdcbab base.py:51-200) -- clones share ``model``, deep-copy
``model_options``; patches are entries of ``model_options["transformer_options"]["patches"]``.
LoRA weights: ``add_patches`` records them (:90-117), ``refresh_loras`` merges them through the
model's one LoraLoader (:125-127), which Forge calls when it loads the model (sampling_prepare)."""

from __future__ import annotations

import copy

from backend.patcher.lora import LoraLoader


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
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

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

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        keys = {k for k, _ in self.model.named_parameters()}
        this = {k: [[strength_patch, diff, strength_model, None, None]] for k, diff in patches.items() if k in keys}
        self.lora_patches[(filename, strength_patch, strength_model, online_mode)] = this
        return set(this)

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

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
