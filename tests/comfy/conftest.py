"""The ComfyUI node pack's tests: a fake ComfyUI (tests/comfy/fake_comfy, Comfy-Org/ComfyUI a125cd84)
and tiny real models. ComfyUI's top-level packages (``comfy``, ``comfy_extras``, ``nodes``,
``latent_preview``) are no WebUI fake's names, so this fake simply goes on ``sys.path``."""

from __future__ import annotations

import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_comfy")
if FAKE not in sys.path:
    sys.path.insert(0, FAKE)


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _control_log():
    from comfy.ldm.modules.diffusionmodules import openaimodel

    openaimodel.APPLIED.clear()
    yield
    openaimodel.APPLIED.clear()
