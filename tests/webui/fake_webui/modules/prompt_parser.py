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


def get_multicond_learned_conditioning(prompts: list[str]) -> MulticondLearnedConditioning:
    batch = []
    for prompt in prompts:
        parts = []
        for sub in re.split(r"\bAND\b", prompt):
            m = re.match(r"^(.*?)(?::\s*([-+]?\d*\.?\d+))?\s*$", sub.strip())
            parts.append((encode(m.group(1)), float(m.group(2)) if m.group(2) else 1.0))
        batch.append(parts)
    return MulticondLearnedConditioning(batch)


def get_learned_conditioning(prompts: list[str]) -> list[torch.Tensor]:
    return [encode(p) for p in prompts]


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
