"""SD.Next's devices (modules/devices.py@058a7f0c): CPU here; inference under no_grad."""

import torch

device = torch.device("cpu")
dtype = torch.float32


def inference_context():
    return torch.no_grad()


def torch_gc(force: bool = False, reason: str | None = None) -> None:
    pass
