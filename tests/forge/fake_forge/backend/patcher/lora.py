"""backend.patcher.lora: LoraLoader (dfdcbab lora.py:344-420), "diff" patches only.

One loader per model (shared by every patcher clone); ``refresh`` puts back the weights it changed
last time, then adds ``strength × diff`` of every patch to the parameters named by the keys --
only when the set of patches differs from the merged one.
"""

from __future__ import annotations

import torch


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup: dict[str, torch.Tensor] = {}
        self.loaded_hash = str([])

    @torch.no_grad()
    def refresh(self, lora_patches, offload_device=None, force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        params = dict(self.model.named_parameters())
        for key, weight in self.backup.items():
            params[key].copy_(weight)
        self.backup = {}
        for patches in lora_patches.values():
            for key, current in patches.items():
                if key not in self.backup:
                    self.backup[key] = params[key].detach().clone()
                for strength, diff, *_ in current:
                    params[key].add_(strength * diff.to(params[key]))
        self.loaded_hash = hashes
