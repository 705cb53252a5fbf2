"""Tiny random diffusers pipelines (SD1.5 layout, width 32) and prompt embeddings, no downloads.

The text encoder is a tiny CLIPTextModel from a config; prompts go in as embeddings, so no
tokenizer files are needed. The VAE halves the size once (vae_scale_factor 2).
"""

from __future__ import annotations

import torch

CONTEXT_DIM = 32

SD_SCHEDULER = dict(  # SD 1.5's scheduler_config.json values
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    clip_sample=False,
)


def tiny_unet(seed: int = 0, in_channels: int = 4, sample_size: int = 8):
    """A UNet2DConditionModel in SD1.5's block layout at width 32 (two levels)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return unet.eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        latent_channels=4,
        norm_num_groups=32,
    ).eval()


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=100,
        hidden_size=CONTEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval()


def scheduler(cls_name: str = "PNDMScheduler", **overrides):
    import diffusers

    return getattr(diffusers, cls_name).from_config({**SD_SCHEDULER, **overrides})


def components(unet=None, scheduler_=None) -> dict:
    return dict(
        unet=tiny_unet() if unet is None else unet,
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        tokenizer=None,
        scheduler=scheduler() if scheduler_ is None else scheduler_,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def txt2img(unet=None, scheduler_=None):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components(unet, scheduler_))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def img2img(unet=None, scheduler_=None):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**components(unet, scheduler_))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeds(seed: int = 1, batch: int = 1, tokens: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, negative_prompt_embeds): random, clearly different from each other."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, tokens, CONTEXT_DIM, generator=g) * 2.0
    uncond = torch.randn(batch, tokens, CONTEXT_DIM, generator=g) * 2.0
    return cond, uncond


def latents(seed: int = 2, batch: int = 1, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, size, size, generator=g)


def tiny_tokenizer(folder):
    """A CLIPTokenizer over letters only (a-z, each also as a word end): prompts as text, no downloads.

    54 ids (below the tiny text encoder's vocab of 100); a word becomes its letters, so different
    prompts give different ids. ``folder``: where vocab.json / merges.txt are written.
    """
    import json
    import os
    import string

    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(vocab_file, merges_file, model_max_length=77)
