"""The paper's inversion claim, measured on a toy model (CFGPP.md §5, §6.2 f).

DDIM inversion (the official formulas) of samples of the condition, then reconstruction by DDIM
with the same scale: plain CFG with k-diffusion's Euler (DDIM η = 0 in VE coordinates), CFG++ with
`sample_ddim_cfgpp`. Uncond: 4 modes (std 0.1, pairwise distance 3) in 16 dimensions. Off-manifold:
the condition sits between two modes. On-manifold: it is one of the modes. CFG extrapolates off
the unconditional manifold, and its inversion breaks; CFG++ stays invertible.
"""

from __future__ import annotations

import math

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import ALPHAS_CUMPROD, Gaussian, GuidedModel, Mixture, cfg_model

SAMPLE = (4, 2, 2)  # 16 dimensions
CFG_SCALES = (1.0, 3.0, 7.5, 12.5)
CFGPP_SCALES = (0.2, 0.6, 1.0)


def toy(condition: str):
    eye = torch.eye(16, dtype=torch.float64)[:4].reshape(4, *SAMPLE)
    means = 3 / math.sqrt(2) * eye
    uncond = Mixture(
        means, torch.full((4,), 0.1, dtype=torch.float64), torch.full((4,), 0.25, dtype=torch.float64)
    )
    center = (means[0] + means[1]) / 2 if condition == "off-manifold" else means[0]
    return Gaussian(center, 0.1), uncond


def invert(cond, uncond, x0, nfe, scale, cfgpp_rule):
    """Official DDIM inversion: the model is read at the current latent with the next (higher)
    timestep; CFG renoises with ε_w both ways, CFG++ removes ε_u and adds ε_λ."""
    timesteps = cfgpp.ddim_timesteps(nfe)
    z, a_prev = x0.clone(), torch.tensor(1.0, dtype=torch.float64)
    for t in timesteps:
        a = ALPHAS_CUMPROD[t]
        sigma = ((1 - a) / a).sqrt()
        x = z / a.sqrt()
        eps_c, eps_u = (x - cond(x, sigma)) / sigma, (x - uncond(x, sigma)) / sigma
        eps_guided = eps_u + scale * (eps_c - eps_u)
        eps_out = eps_u if cfgpp_rule else eps_guided
        x0_hat = (z - (1 - a_prev).sqrt() * eps_out) / a_prev.sqrt()
        z = a.sqrt() * x0_hat + (1 - a).sqrt() * eps_guided
        a_prev = a
    return z / a_prev.sqrt()  # VE x at the top timestep


def reconstruction_rmse(condition, nfe, scale, cfgpp_rule, batch=8):
    cond, uncond = toy(condition)
    g = torch.Generator().manual_seed(0)
    x0 = cond.mean + cond.std * torch.randn((batch, *SAMPLE), generator=g, dtype=torch.float64)
    x_top = invert(cond, uncond, x0, nfe, scale, cfgpp_rule)
    sigmas = cfgpp.ddim_sigmas(ALPHAS_CUMPROD, nfe)
    if cfgpp_rule:
        rec = cfgpp.sample_ddim_cfgpp(
            GuidedModel(cond, uncond), x_top, sigmas, {"cond_scale": scale}, disable=True
        )
    else:
        rec = ks.sample_euler(cfg_model(cond, uncond), x_top, sigmas, {"cond_scale": scale}, disable=True)
    return float((rec - x0).pow(2).mean().sqrt())


@pytest.mark.parametrize("nfe", [10, 50])
def test_cfgpp_inversion_beats_cfg_off_manifold(nfe):
    rows = {}
    for condition in ("on-manifold", "off-manifold"):
        cfg = [reconstruction_rmse(condition, nfe, w, False) for w in CFG_SCALES]
        pp = [reconstruction_rmse(condition, nfe, lam, True) for lam in CFGPP_SCALES]
        rows[condition] = (cfg, pp)
    head = " ".join(f"w={w:<5}" for w in CFG_SCALES) + "  " + " ".join(f"λ={lam:<5}" for lam in CFGPP_SCALES)
    print(f"\n[cfgpp inversion] reconstruction RMSE, NFE {nfe}\n  {'':13s} {head}")
    for condition, (cfg, pp) in rows.items():
        cells = " ".join(f"{v:7.3f}" for v in cfg) + "  " + " ".join(f"{v:7.3f}" for v in pp)
        print(f"  {condition:13s} {cells}")

    cfg_off, pp_off = rows["off-manifold"]
    cfg_75, pp_06 = cfg_off[CFG_SCALES.index(7.5)], pp_off[CFGPP_SCALES.index(0.6)]
    assert pp_06 < 0.5 * cfg_75, (pp_06, cfg_75)
    # CFG's inversion error grows with its scale off the manifold
    assert cfg_off == sorted(cfg_off)
