"""split_guided: accepts this step's [uncond, cond] batch at any float dtype, refuses anything else."""

from __future__ import annotations

import pytest
import torch

from lib_hidiff.diffusers.capture import Captured
from lib_hidiff.diffusers.guidance import GuidedSplit, split_guided


def _batch(dtype, w=7.5, rows=2):
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2 * rows, 4, 16, 16, generator=g).to(dtype)
    u, c = out.chunk(2)
    return out, u + w * (c - u)  # as the pipeline computes it, in the UNet's dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_accepts_the_pipeline_sum_in_its_dtype(dtype):
    out, guided = _batch(dtype)
    split = split_guided(Captured(out, torch.tensor(500)), guided, torch.tensor(500))
    assert isinstance(split, GuidedSplit)
    assert split.scale == pytest.approx(7.5, rel=1e-2)
    assert torch.equal(split.uncond, out[:2]) and torch.equal(split.cond, out[2:])
    assert split.guided(0.0).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_refuses_a_changed_prediction(dtype):
    out, guided = _batch(dtype)
    # 10% of the prediction: well beyond rounding even in bfloat16 (a foreign batch misses by 100%).
    other = (guided.float() + 0.1 * guided.float().std() * torch.randn(guided.shape)).to(dtype)
    assert "not ε_u + w" in split_guided(Captured(out, None), other, None)


def test_cond_equal_uncond_accepted():
    u = torch.randn(1, 4, 8, 8)
    split = split_guided(Captured(torch.cat([u, u]), 10.0), u.clone(), 10.0)
    assert isinstance(split, GuidedSplit) and torch.equal(split.guided(0.6), u)


@pytest.mark.parametrize(
    "captured, reason",
    [
        (None, "no UNet call was captured"),
        (Captured(torch.zeros(1, 4, 8, 8), 5), "no unconditional pass"),
        (Captured(torch.zeros(3, 4, 8, 8), 5), "3 rows for 1 guided rows"),
        (Captured(torch.zeros(2, 4, 8, 9), 5), "does not match"),
        (Captured(torch.zeros(2, 4, 8, 8), 7), "another timestep"),
    ],
)
def test_reasons(captured, reason):
    assert reason in split_guided(captured, torch.zeros(1, 4, 8, 8), torch.tensor(5))
