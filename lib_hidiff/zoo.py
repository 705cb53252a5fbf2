"""Real UNets with random weights, for the tests and the benchmark (never used by the WebUI glue).

* :func:`build_ldm_unet` builds the real ``ldm`` ``UNetModel`` (PyPI ``stable-diffusion-sdkit``) in
  the SD 1.5, SD 2.x or SDXL block layout at any width. ldm takes one transformer depth for all
  levels; SDXL's per-level depths are reached by growing the SpatialTransformers after
  construction (the WebUI's sgm UNet builds the same modules directly).
* :func:`sdpa_attention` swaps ldm's attention kernel for PyTorch SDPA, as the WebUI does.
* :func:`diffusers_twin` converts the weights into a diffusers ``UNet2DConditionModel`` with
  diffusers' own converter, and :class:`OfficialHiDiffusion` drives the official ``hidiffusion``
  package on it (step counters and shift draws scripted) -- the oracle for equivalence tests.
* :func:`build_diffusers_unet` builds a diffusers ``UNet2DConditionModel`` in the same block
  layouts directly from a config, and :func:`build_controlnet` a small ``ControlNetModel`` for it.

ldm, diffusers and hidiffusion are imported inside functions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FAMILIES",
    "OfficialHiDiffusion",
    "UNetSpec",
    "build_controlnet",
    "build_diffusers_unet",
    "build_ldm_unet",
    "diffusers_config",
    "diffusers_twin",
    "randomize_",
    "sdpa_attention",
]


@dataclass(frozen=True)
class UNetSpec:
    """An ldm UNet configuration; ``width`` is model_channels (320 for the real models)."""

    family: str
    channel_mult: tuple[int, ...]
    attention_resolutions: tuple[int, ...]
    depths: tuple[int, ...]  # transformer depth per level (0 where the level has no attention)
    linear: bool
    head_channels: int  # 0 = fixed head count below
    heads: int
    context_dim: int


FAMILIES: dict[str, UNetSpec] = {
    "sd1": UNetSpec("sd1", (1, 2, 4, 4), (4, 2, 1), (1, 1, 1, 0), False, 0, 8, 768),
    "sd2": UNetSpec("sd2", (1, 2, 4, 4), (4, 2, 1), (1, 1, 1, 0), True, 64, 0, 1024),
    "sdxl": UNetSpec("sdxl", (1, 2, 4), (4, 2), (0, 2, 10), True, 64, 0, 2048),
    # The SDXL refiner: SD1.5's 4 levels but attention only at levels 1-2 (HiDiffusion refuses it).
    "sdxl_refiner": UNetSpec("sdxl_refiner", (1, 2, 4, 4), (4, 2), (0, 4, 4, 0), True, 64, 0, 1280),
}


def _heads_kwargs(spec: UNetSpec, width: int, heads: int | None) -> dict:
    if heads is not None:
        return {"num_heads": heads, "num_head_channels": -1}
    if spec.head_channels and width >= spec.head_channels:
        return {"num_heads": -1, "num_head_channels": spec.head_channels}
    return {"num_heads": spec.heads or 2, "num_head_channels": -1}


def build_ldm_unet(
    family: str,
    width: int = 32,
    *,
    heads: int | None = None,
    context_dim: int | None = None,
    depths: Sequence[int] | None = None,
    seed: int = 0,
    attn_std: float | None = None,
    in_channels: int = 4,
) -> nn.Module:
    """A real ldm UNetModel in a family's block layout with random weights (eval mode, float32)."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    spec = FAMILIES[family]
    depths = tuple(spec.depths if depths is None else depths)
    unet = UNetModel(
        image_size=32,
        in_channels=in_channels,
        out_channels=4,
        model_channels=width,
        num_res_blocks=2,
        attention_resolutions=list(spec.attention_resolutions),
        channel_mult=list(spec.channel_mult),
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=spec.context_dim if context_dim is None else context_dim,
        use_linear_in_transformer=spec.linear,
        legacy=False,
        use_checkpoint=False,
        **_heads_kwargs(spec, width, heads),
    )
    _grow_transformers(unet, depths)
    randomize_(unet, seed=seed, attn_std=attn_std)
    return unet.eval()


def _level_of_blocks(unet: nn.Module) -> Iterator[tuple[nn.Module, int]]:
    """(block, level) for every input and output block, then the middle block."""
    from .unet.layout import block_levels

    in_levels, out_levels = block_levels(unet)
    yield from zip(unet.input_blocks, in_levels)
    yield from zip(unet.output_blocks, out_levels)
    yield unet.middle_block, in_levels[-1]


def _grow_transformers(unet: nn.Module, depths: Sequence[int]) -> None:
    for block, level in _level_of_blocks(unet):
        for st in (m for m in block.children() if type(m).__name__ == "SpatialTransformer"):
            want = max(depths[level], 1)
            blocks = st.transformer_blocks
            while len(blocks) < want:
                blocks.append(copy.deepcopy(blocks[0]))
            while len(blocks) > want:
                del blocks[-1]


@torch.no_grad()
def randomize_(unet: nn.Module, seed: int = 0, attn_std: float | None = None) -> nn.Module:
    """Fan-in scaled random weights everywhere (ldm zero-initialises several output layers).

    ``attn_std`` gives attention q/k/v/out and proj_out a larger std so that attention is far from
    uniform -- needed when a test must see which tokens attend to which.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in unet.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            std = 1.0 / math.sqrt(fan_in)
            if attn_std is not None and any(
                k in name for k in ("to_q", "to_k", "to_v", "to_out", "proj_out")
            ):
                std = attn_std
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        else:  # norm weights
            p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.05)
    return unet


def _sdpa_forward(self, x, context=None, mask=None, **kwargs):
    """ldm CrossAttention with PyTorch SDPA (what the WebUI's "sdp" optimisation does)."""
    h = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, inner = q.shape
    q, k, v = (t.reshape(b, t.shape[1], h, inner // h).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.reshape(b, 1, 1, -1).bool()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = out.transpose(1, 2).reshape(b, n, inner)
    return self.to_out(out)


@contextmanager
def sdpa_attention() -> Iterator[None]:
    """Swap ldm's CrossAttention.forward (class level) for SDPA inside the block."""
    from ldm.modules import attention

    with mock.patch.object(attention.CrossAttention, "forward", _sdpa_forward):
        yield


# -- diffusers twin and the official implementation --------------------------------------------------


def _per_level(unet: nn.Module, n_levels: int) -> list[nn.Module | None]:
    """The first SpatialTransformer of each level's input blocks (None where the level has none)."""
    from .unet.layout import block_levels, child

    found: list[nn.Module | None] = [None] * n_levels
    for block, level in zip(unet.input_blocks, block_levels(unet)[0]):
        st = child(block, "SpatialTransformer")
        if st is not None and found[level] is None:
            found[level] = st
    return found


def _diffusers_config(unet: nn.Module, family: str) -> dict:
    from .unet.layout import child

    spec = FAMILIES[family]
    n_levels = len(spec.channel_mult)
    sts = _per_level(unet, n_levels)
    attn1 = [st.transformer_blocks[0].attn1 if st is not None else None for st in sts]
    first = next(st for st in sts if st is not None)
    mid = child(unet.middle_block, "SpatialTransformer")
    return {
        "sample_size": 32,
        "in_channels": unet.input_blocks[0][0].in_channels,
        "out_channels": 4,
        "down_block_types": tuple("CrossAttnDownBlock2D" if st is not None else "DownBlock2D" for st in sts),
        "up_block_types": tuple(
            "CrossAttnUpBlock2D" if st is not None else "UpBlock2D" for st in reversed(sts)
        ),
        "block_out_channels": tuple(unet.model_channels * m for m in spec.channel_mult),
        "layers_per_block": 2,
        "cross_attention_dim": first.transformer_blocks[0].attn2.to_k.in_features,
        # diffusers' legacy name: ``attention_head_dim`` holds the number of heads.
        # diffusers' mid block takes the last level's count; SD 1.x/2.x have no input attention there.
        "attention_head_dim": tuple(
            a.heads if a is not None else mid.transformer_blocks[0].attn1.heads for a in attn1
        ),
        "use_linear_projection": spec.linear,
        "transformer_layers_per_block": tuple(
            len(st.transformer_blocks) if st is not None else 1 for st in sts
        ),
        "norm_num_groups": 32,
    }


def diffusers_twin(unet: nn.Module, family: str) -> nn.Module:
    """A diffusers UNet2DConditionModel holding exactly the ldm UNet's weights (float32, eval)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    cfg = _diffusers_config(unet, family)
    # deepcopy: diffusers shares activation modules (e.g. one SiLU) between models, and the
    # official code keeps per-model state on them.
    twin = copy.deepcopy(UNet2DConditionModel(**cfg))
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(sd, dict(twin.config))
    missing, unexpected = twin.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"ldm -> diffusers conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return twin.eval()


def _level_heads(spec: UNetSpec, width: int, heads: int | None) -> tuple[int, ...]:
    """Heads per level, as ldm derives them from num_heads / num_head_channels."""
    kw = _heads_kwargs(spec, width, heads)
    if kw["num_heads"] != -1:
        return (kw["num_heads"],) * len(spec.channel_mult)
    return tuple(width * m // kw["num_head_channels"] for m in spec.channel_mult)


def diffusers_config(
    family: str,
    width: int = 32,
    *,
    heads: int | None = None,
    context_dim: int | None = None,
    depths: Sequence[int] | None = None,
    in_channels: int = 4,
) -> dict:
    """A UNet2DConditionModel config in a family's block layout (the layout build_ldm_unet builds)."""
    spec = FAMILIES[family]
    depths = tuple(spec.depths if depths is None else depths)
    attn = [d > 0 for d in depths]
    return {
        "sample_size": 32,
        "in_channels": in_channels,
        "out_channels": 4,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        "block_out_channels": tuple(width * m for m in spec.channel_mult),
        "layers_per_block": 2,
        "cross_attention_dim": spec.context_dim if context_dim is None else context_dim,
        # diffusers' legacy name: ``attention_head_dim`` holds the number of heads.
        "attention_head_dim": _level_heads(spec, width, heads),
        "use_linear_projection": spec.linear,
        "transformer_layers_per_block": tuple(max(d, 1) for d in depths),
        "norm_num_groups": 32,
    }


def build_diffusers_unet(
    family: str,
    width: int = 32,
    *,
    heads: int | None = None,
    context_dim: int | None = None,
    depths: Sequence[int] | None = None,
    seed: int = 0,
    attn_std: float | None = None,
    in_channels: int = 4,
    **overrides,
) -> nn.Module:
    """A diffusers UNet2DConditionModel in a family's block layout with random weights (eval, float32).

    ``overrides`` change config entries (e.g. ``downsample_padding=0``).
    """
    from diffusers import UNet2DConditionModel

    cfg = diffusers_config(
        family, width, heads=heads, context_dim=context_dim, depths=depths, in_channels=in_channels
    )
    cfg.update(overrides)
    # deepcopy: diffusers shares activation modules between models (see diffusers_twin).
    unet = copy.deepcopy(UNet2DConditionModel(**cfg))
    randomize_(unet, seed=seed, attn_std=attn_std)
    return unet.eval()


def build_controlnet(
    unet: nn.Module, seed: int = 1, hint_channels: Sequence[int] = (8, 8, 8, 8)
) -> nn.Module:
    """A diffusers ControlNetModel for ``unet`` with random weights (its zero convs too, so it acts).

    Its hint image is ``2 ** (len(hint_channels) - 1)`` times the latent size.
    """
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(hint_channels))
    net = copy.deepcopy(net)
    randomize_(net, seed=seed)
    return net.eval()


# The official code picks the SD1.5 or SDXL path from the pipeline's name.
_OFFICIAL_NAMES = {
    "sd1": "runwayml/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1-base",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl_turbo": "stabilityai/sdxl-turbo",
    "sdxl_inpainting": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}

# torch.rand values that land in the official shift buckets k = 0..3 (u <= .25, <= .5, <= .75, > .75).
SHIFT_DRAW = (0.1, 0.3, 0.6, 0.9)


class DiffusionPipeline:
    """A stand-in the official code accepts: it checks the class *name* only."""


class OfficialHiDiffusion:
    """The official ``hidiffusion`` package applied to a diffusers UNet, driven step by step."""

    def __init__(
        self, twin: nn.Module, model: str, steps: int, raunet: bool = True, window_attn: bool = True
    ):
        from hidiffusion import apply_hidiffusion

        self.unet = twin
        self.pipe = DiffusionPipeline()
        self.pipe.unet = twin
        self.pipe.name_or_path = _OFFICIAL_NAMES[model]
        self.pipe._num_timesteps = steps
        apply_hidiffusion(self.pipe, apply_raunet=raunet, apply_window_attn=window_attn)

    def remove(self) -> None:
        from hidiffusion import remove_hidiffusion

        remove_hidiffusion(self.pipe)

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        step: int,
        shift_k: int = 0,
        **unet_kwargs,
    ) -> torch.Tensor:
        """Output of the official UNet at step ``step`` with every window shift drawn as ``shift_k``.

        ``unet_kwargs`` go to the UNet call (e.g. ControlNet residuals, cross_attention_kwargs).
        """
        for m in self.unet.modules():
            if hasattr(m, "max_timestep") and isinstance(getattr(m, "timestep", None), int):
                m.timestep = step
        draw = torch.tensor([SHIFT_DRAW[shift_k]])
        with mock.patch("torch.rand", lambda *a, **k: draw.clone()):
            return self.unet(x, t, encoder_hidden_states=context, **unet_kwargs).sample


def ldm_context(unet: nn.Module, context: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
    """ldm's SpatialTransformer reads one context per transformer depth; sgm repeats a single one."""
    depth = max(len(m.transformer_blocks) for m in unet.modules() if type(m).__name__ == "SpatialTransformer")
    return context if depth == 1 else [context] * depth
