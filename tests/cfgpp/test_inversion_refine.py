"""Refinement (iterations > 0) of `invert_cfgpp`: round trips invert → Euler CFG++ on closed-form models.

Relative reconstruction error ‖sample(invert(x)) − x‖ / ‖x‖ on Karras and DDIM grids ending at 0:
- Gaussians (isotropic pair; anisotropic pair, per-dimension stds): falls monotonically with the
  iterations and reaches ≤ 1e-6, at 10 steps as at 50;
- the Gaussian-mixture pair: refinement never makes the round trip worse than the plain inversion
  (per sample: test_inversion_guarantee.py), and plain CFG through the no-uncond fallback neither;
- a model on which no trial can improve returns the plain inversion bit for bit.
`pytest -s` prints the table in docs/cfgpp.md ("Inversion").
"""

from __future__ import annotations

import functools
import logging

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import PAIRS, SHAPE, Gaussian, GuidedModel, cfg_model, grid

ITERATIONS = (0, 1, 2, 3, 5, 10, 20)
TABLE_ITERATIONS = (0, 1, 2, 5, 10)


def anisotropic_pair(seed: int = 3) -> tuple[Gaussian, Gaussian]:
    """Per-dimension stds (0.2–1.7 cond, 0.5–2 uncond): the step's Jacobian is not a multiple of I."""
    g = torch.Generator().manual_seed(seed)
    sample = SHAPE[1:]
    std_c = 0.2 + 1.5 * torch.rand(sample, generator=g, dtype=torch.float64)
    std_u = 0.5 + 1.5 * torch.rand(sample, generator=g, dtype=torch.float64)
    cond = Gaussian(torch.randn(sample, generator=g, dtype=torch.float64) + 1.0, std_c)
    return cond, Gaussian(torch.zeros(sample, dtype=torch.float64), std_u)


MODELS = {"gaussian": PAIRS["gaussian"], "anisotropic": anisotropic_pair, "mixture": PAIRS["mixture"]}


def clean_latents(name: str, batch: int = 8, seed: int = 1) -> torch.Tensor:
    """Samples of the condition (the 'encoded image')."""
    cond, _ = MODELS[name]()
    g = torch.Generator().manual_seed(seed)
    return cond.mean + cond.std * torch.randn((batch, *SHAPE[1:]), generator=g, dtype=torch.float64)


@functools.cache
def round_trip(name: str, kind: str, steps: int, scale: float, iterations: int, rule: str = "cfgpp") -> float:
    cond, uncond = MODELS[name]()
    x = clean_latents(name)
    sigmas = grid(kind, steps)
    extra = {"cond_scale": scale}
    if rule == "cfgpp":
        model = GuidedModel(cond, uncond)
        y = cfgpp.invert_cfgpp(model, x, sigmas.flip(0), extra, disable=True, iterations=iterations)
        rec = cfgpp.sample_euler_cfgpp(model, y, sigmas, extra, disable=True)
    else:  # plain CFG: the same inversion through the no-uncond fallback, k-diffusion's Euler back
        model = cfg_model(cond, uncond)
        y = cfgpp.invert_cfgpp(model, x, sigmas.flip(0), extra, disable=True, iterations=iterations)
        rec = ks.sample_euler(model, y, sigmas, extra, disable=True)
    return float((rec - x).norm() / x.norm())


def _monotone(errors: list[float]) -> bool:
    return all(b <= a * (1 + 1e-9) + 1e-13 for a, b in zip(errors, errors[1:]))


@pytest.mark.parametrize("name", ["gaussian", "anisotropic"])
@pytest.mark.parametrize("kind", ["karras", "ddim"])
@pytest.mark.parametrize("steps", [10, 50])
def test_gaussian_round_trip_falls_monotonically_to_1e6(name, kind, steps):
    errors = [round_trip(name, kind, steps, 0.6, k) for k in ITERATIONS]
    assert _monotone(errors), errors
    assert errors[-1] <= 1e-6, errors
    assert errors[0] >= 0.1  # the plain inversion alone is far from exact here


@pytest.mark.parametrize("kind", ["karras", "ddim"])
@pytest.mark.parametrize("steps", [10, 50])
def test_anisotropic_gaussian_with_strong_guidance_stays_monotone(kind, steps):
    # λ = 1 widens the step Jacobian's spectrum past 1; unclipped secant lengths blew this round trip
    # up ~100-fold halfway (docs/cfgpp.md, "Inversion")
    errors = [round_trip("anisotropic", kind, steps, 1.0, k) for k in ITERATIONS]
    assert _monotone(errors), errors
    assert errors[-1] <= 1e-4 * errors[0], errors


@pytest.mark.parametrize("kind", ["karras", "ddim"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("scale", [0.6, 1.0, 1.3])
def test_mixture_refinement_never_worse_than_plain(kind, steps, scale):
    """Each sample keeps the refined chain only where its measured round trip beats the plain one's."""
    errors = [round_trip("mixture", kind, steps, scale, k) for k in TABLE_ITERATIONS]
    assert max(errors[1:]) <= errors[0], errors
    assert min(errors[1:]) <= 0.5 * errors[0], errors


def test_refinement_that_cannot_improve_returns_the_plain_inversion():
    """A model that is exact at the plain inversion's points and garbage everywhere else: every trial
    after the plain step fails, and the result is the plain inversion, bit for bit."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=3)
    ascending = grid("karras", 6).flip(0)
    extra = {"cond_scale": 0.8}

    class Recorder(GuidedModel):
        def __init__(self, *args):
            super().__init__(*args)
            self.points: list[torch.Tensor] = []

        def __call__(self, model_x, sigma, cond_scale, **kw):
            self.points.append(model_x.clone())
            return super().__call__(model_x, sigma, cond_scale, **kw)

    recorder = Recorder(cond, uncond)
    steps_out: list[torch.Tensor] = []
    plain = cfgpp.invert_cfgpp(
        recorder, x, ascending, extra, disable=True, callback=lambda d: steps_out.append(d["x"].clone())
    )
    honest = recorder.points + steps_out  # each step's start point and its plain result

    class Hostile(GuidedModel):
        def __call__(self, model_x, sigma, cond_scale, **kw):
            out = super().__call__(model_x, sigma, cond_scale, **kw)
            if not any(torch.equal(model_x, p) for p in honest):
                self.last_denoised_uncond = self.last_denoised_uncond - 50.0
                return out + 50.0
            return out

    hostile = Hostile(cond, uncond)
    refined = cfgpp.invert_cfgpp(hostile, x, ascending, extra, disable=True, iterations=4)
    assert torch.equal(refined, plain)
    assert len(hostile.sigmas) > 2 * (len(ascending) - 1)  # it did try


def test_print_inversion_table():
    """The docs table: relative round-trip error, Karras grid, CFG++ λ 0.6 vs CFG w 7.5."""
    logging.getLogger("lib_hidiff.cfgpp").disabled = True  # the CFG rows use the fallback on purpose
    try:
        rows = []
        for steps in (10, 50):
            for name, rule, scale in [
                ("gaussian", "cfgpp", 0.6),
                ("anisotropic", "cfgpp", 0.6),
                ("mixture", "cfgpp", 0.6),
                ("mixture", "cfg", 7.5),
            ]:
                errors = [round_trip(name, "karras", steps, scale, k, rule) for k in TABLE_ITERATIONS]
                label = f"{name} {'CFG++ λ' if rule == 'cfgpp' else 'CFG w'}={scale}"
                rows.append((steps, label, errors))
    finally:
        logging.getLogger("lib_hidiff.cfgpp").disabled = False
    print("\n[cfgpp inversion] relative round-trip error, Karras, iterations " + str(TABLE_ITERATIONS))
    for steps, label, errors in rows:
        print(f"  {steps:2d} steps  {label:26s} " + " ".join(f"{e:8.1e}" for e in errors))
    by_label = {(s, lab): e for s, lab, e in rows}
    for _, _, errors in rows:
        assert max(errors[1:]) <= errors[0] * (1 + 1e-9)  # CFG included (before the guarantee: 2.0 vs 0.42)
    for steps in (10, 50):
        # the paper's claim on the mixture, for the plain inversion
        assert by_label[(steps, "mixture CFG++ λ=0.6")][0] < by_label[(steps, "mixture CFG w=7.5")][0]
