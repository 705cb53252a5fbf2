"""Saves a tiny random SD 1.5-layout pipeline and a 64 px test picture into a folder (argv[1]).

Run with the interpreter of the venv the wheel was installed into (tests/packaging/test_wheel.py),
so the pipeline is saved by the diffusers and transformers that will load it. The UNet comes from
the wheel's lib_hidiff.zoo; the VAE, text encoder and scheduler from tests/diffusers/pipes.py, loaded
by file path: this repository is never put on sys.path here, so lib_hidiff can only come from the
wheel. The README examples then load ``<folder>/pipeline`` with ``from_pretrained`` and read ``<folder>/photo.png``
(tests/packaging/readme_snippets.py).
The tokenizer is CLIP's BPE over a hand-written vocabulary (letters and digits, no merges): no
download anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import string
import sys
import tempfile

import torch

SAMPLE_SIZE = 32  # latent side: the pipeline's default image is 64 px (the tiny VAE halves once)


def _pipes():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "diffusers", "pipes.py")
    spec = importlib.util.spec_from_file_location("_hidiff_tiny_pipes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    symbols = string.ascii_lowercase + string.digits
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({token: i for i, token in enumerate(tokens)}, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "CLIPTokenizer"}, f)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def save(folder: str) -> None:
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from lib_hidiff import zoo  # the wheel's

    pipes = _pipes()
    tokenizer = tiny_tokenizer()
    text_encoder = pipes.tiny_text_encoder()
    assert len(tokenizer) <= text_encoder.config.vocab_size, (len(tokenizer), text_encoder.config.vocab_size)
    # SD 1.5's four levels (HiDiffusion knows the layout), at width 32
    unet = zoo.build_diffusers_unet(
        "sd1", 32, context_dim=pipes.CONTEXT_DIM, heads=2, sample_size=SAMPLE_SIZE
    )
    pipe = StableDiffusionPipeline(**{**pipes.components(unet=unet), "tokenizer": tokenizer})
    pipe.save_pretrained(os.path.join(folder, "pipeline"))

    side = 2 * SAMPLE_SIZE  # a smooth picture with some structure: gradients and a disc
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    disc = ((x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.25).float()
    rgb = torch.stack([(x + 1) / 2, (y + 1) / 2, 0.3 + 0.6 * disc], dim=-1)
    Image.fromarray((rgb * 255).round().to(torch.uint8).numpy()).save(os.path.join(folder, "photo.png"))


if __name__ == "__main__":
    save(sys.argv[1])
