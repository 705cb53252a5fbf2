"""modules.prompt_parser: prompts -> conditioning, "AND" composition with weights (no scheduling).

A fake text encoder turns a prompt into a fixed (tokens, channels) tensor; a composable prompt
"a AND b :0.5" gives one image several weighted conds, as the WebUI's multicond batch does.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch

TOKENS, CHANNELS = 7, 32


def encode(prompt: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(prompt.strip().encode()))
    return torch.randn(TOKENS, CHANNELS, generator=g)


@dataclass
class MulticondLearnedConditioning:
    batch: list  # per image: [(cond tensor, weight), ...]


class SdConditioning(list):
    """1.10: a list of prompts that also carries the image size (SDXL's size conditioning)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        src = copy_from if copy_from is not None else prompts
        self.is_negative_prompt = is_negative_prompt or getattr(src, "is_negative_prompt", False)
        self.width = width or getattr(src, "width", None)
        self.height = height or getattr(src, "height", None)


def _prompts(model, prompts):
    # 1.10 takes (model, prompts, steps, hires_steps, use_old_scheduling); the fakes' own callers
    # pass the prompts alone.
    return model if prompts is None else prompts


def get_multicond_learned_conditioning(
    model, prompts=None, steps=None, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    prompts = _prompts(model, prompts)
    batch = []
    for prompt in prompts:
        parts = []
        for sub in re.split(r"\bAND\b", prompt):
            m = re.match(r"^(.*?)(?::\s*([-+]?\d*\.?\d+))?\s*$", sub.strip())
            parts.append((encode(m.group(1)), float(m.group(2)) if m.group(2) else 1.0))
        batch.append(parts)
    return MulticondLearnedConditioning(batch)


def get_learned_conditioning(
    model, prompts=None, steps=None, hires_steps=None, use_old_scheduling=False
) -> list[torch.Tensor]:
    return [encode(p) for p in _prompts(model, prompts)]


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step: int):
    conds_list, rows = [], []
    for parts in c.batch:
        conds_list.append([])
        for tensor, weight in parts:
            conds_list[-1].append((len(rows), weight))
            rows.append(tensor)
    return conds_list, torch.stack(rows)


def reconstruct_cond_batch(c: list[torch.Tensor], current_step: int) -> torch.Tensor:
    return torch.stack(list(c))
