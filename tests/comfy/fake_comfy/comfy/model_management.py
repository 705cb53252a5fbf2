"""comfy/model_management.py: devices, free memory (decides cond/uncond batching) and interrupts."""

from __future__ import annotations

import torch

FREE_MEMORY = 1 << 40  # tests lower it to make calc_cond_batch run cond and uncond in separate calls


class InterruptProcessingException(Exception):
    pass


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def get_free_memory(device=None):
    return FREE_MEMORY
