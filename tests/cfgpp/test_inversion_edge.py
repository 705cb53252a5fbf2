"""Edge cases of `invert_cfgpp`: short schedules, σ = 0, DDIM CFG++ as the way back, dtypes, batches,
callbacks and progress, call counts, noise and bad arguments."""

from __future__ import annotations

import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import ALPHAS_CUMPROD, PAIRS, GuidedModel, grid, initial_x
from .test_inversion_refine import clean_latents


def _invert(model, x, ascending, lam=0.6, **kw):
    return cfgpp.invert_cfgpp(model, x, ascending, {"cond_scale": lam}, disable=True, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_one_sigma_is_no_step_and_no_call():
    model = GuidedModel(*PAIRS["mixture"]())
    x = clean_latents("mixture", batch=2)
    for ascending in (torch.tensor([0.0]), torch.tensor([3.0], dtype=torch.float64)):
        out = _invert(model, x, ascending, iterations=3)
        assert torch.equal(out, x)
    assert model.sigmas == []


@pytest.mark.parametrize("start, end", [(0.0, 0.1), (0.5, 1.7)])
def test_two_sigmas_is_one_step_that_sampling_undoes(start, end):
    """From σ = 0 the step solves D_λ(y, σ_1) = x (the sampler's last step lands on D_λ)."""
    cond, uncond = PAIRS["gaussian"]()
    model = GuidedModel(cond, uncond)
    x = clean_latents("gaussian", batch=2)
    ascending = torch.tensor([start, end], dtype=torch.float64)
    y = _invert(model, x, ascending, iterations=30)
    assert model.sigmas and set(model.sigmas) == {end}
    back = cfgpp.sample_euler_cfgpp(model, y, ascending.flip(0), {"cond_scale": 0.6}, disable=True)
    assert _rel(back, x) <= 1e-10
    plain = _invert(GuidedModel(cond, uncond), x, ascending)
    assert _rel(plain, y) > 1e-4  # the plain step alone is not the inverse


def test_schedule_with_and_without_final_zero():
    """A WebUI schedule ends at 0: invert over it flipped, 0 included, and sampling over the schedule
    returns to x. Dropping the 0 instead takes x to sit at σ_min: the round trip then ends on
    D_λ(x, σ_min), off by the denoiser's correction at σ_min."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=4)
    sigmas = grid("karras", 10)
    model = GuidedModel(cond, uncond)
    extra = {"cond_scale": 0.6}
    y = _invert(model, x, sigmas.flip(0), iterations=20)
    full = cfgpp.sample_euler_cfgpp(model, y, sigmas, extra, disable=True)
    y_nz = _invert(model, x, sigmas[:-1].flip(0), iterations=20)
    no_zero = cfgpp.sample_euler_cfgpp(model, y_nz, sigmas, extra, disable=True)
    err_full, err_nz = _rel(full, x), _rel(no_zero, x)
    print(f"\n[cfgpp inversion] Karras 10, 20 iterations: with final 0 {err_full:.1e}, without {err_nz:.1e}")
    assert err_full < err_nz


def test_ddim_cfgpp_eta0_takes_the_same_way_back():
    cond, uncond = PAIRS["gaussian"]()
    model = GuidedModel(cond, uncond)
    x = clean_latents("gaussian", batch=3)
    sigmas = cfgpp.ddim_sigmas(ALPHAS_CUMPROD, 10)
    y = _invert(model, x, sigmas.flip(0), iterations=10)
    via_euler = cfgpp.sample_euler_cfgpp(model, y, sigmas, {"cond_scale": 0.6}, disable=True)
    via_ddim = cfgpp.sample_ddim_cfgpp(model, y, sigmas, {"cond_scale": 0.6}, disable=True)
    assert float((via_euler - via_ddim).abs().max()) <= 1e-12
    assert _rel(via_ddim, x) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("iterations", [0, 3])
def test_dtype_is_kept_and_close_to_float64(dtype, iterations):
    cond, uncond = PAIRS["mixture"]()
    x64 = clean_latents("mixture", batch=2)
    ascending = grid("karras", 8).flip(0)
    ref = _invert(GuidedModel(cond, uncond), x64, ascending, iterations=iterations)
    out = _invert(
        GuidedModel(cond, uncond), x64.to(dtype), ascending.to(torch.float32), iterations=iterations
    )
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    assert _rel(out, ref) <= (5e-2 if dtype == torch.float16 else 1e-4)


def test_batch_samples_are_independent():
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=4)
    ascending = grid("ddim", 10).flip(0)
    together = _invert(GuidedModel(cond, uncond), x, ascending, lam=1.0, iterations=5)
    for b in range(x.shape[0]):
        alone = _invert(GuidedModel(cond, uncond), x[b : b + 1], ascending, lam=1.0, iterations=5)
        assert float((together[b : b + 1] - alone).abs().max()) <= 1e-10


def test_callback_once_per_step_and_call_counts():
    """iterations = 0: one callback and one model call per step (the paper's inversion, nothing else)."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=2)
    ascending = grid("karras", 6).flip(0)
    seen = []
    model = GuidedModel(cond, uncond)
    out = _invert(model, x, ascending, callback=seen.append)
    assert [d["i"] for d in seen] == [d["step"] for d in seen] == list(range(6))
    assert all(d["phase"] == "invert" and d["steps"] == 6 for d in seen)
    assert cfgpp.inversion_progress_steps(6, 0) == 6 == cfgpp.inversion_max_model_calls(6, 0)
    assert [float(d["sigma"]) for d in seen] == [float(s) for s in ascending[1:]]
    assert all(d["sigma_hat"] is d["sigma"] for d in seen)
    assert torch.equal(seen[-1]["x"], out)
    assert all(d["denoised"].shape == x.shape for d in seen)
    assert len(model.sigmas) == 6


def test_iterations_0_is_the_plain_step_bit_for_bit():
    """y = y0 − r(y0) with y0 = x_lo √((1 + σ_hi²)/(1 + σ_lo²)), computed here from the model directly."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=3)
    ascending = grid("ddim", 5).flip(0)
    model = GuidedModel(cond, uncond)
    lam = 0.6
    expected = x
    for lo, hi in zip(ascending[:-1], ascending[1:]):
        y0 = expected * ((1 + float(hi) ** 2) / (1 + float(lo) ** 2)) ** 0.5
        d_lam = model(y0, hi * y0.new_ones([3]), cond_scale=lam)
        r0 = d_lam + float(lo) / float(hi) * (y0 - model.last_denoised_uncond) - expected
        expected = y0 - r0
    assert torch.equal(_invert(GuidedModel(cond, uncond), x, ascending, lam=lam), expected)


@pytest.mark.parametrize("iterations", [1, 4])
def test_refinement_progress_phases_and_call_counts(iterations):
    """iterations > 0: plain chain, refined chain, the round trip of each: one callback per step of each
    phase, a running count over all of them, and at most (k + 5) model calls per step."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=2)
    n = 6
    ascending = grid("karras", n).flip(0)
    seen = []
    model = GuidedModel(cond, uncond)
    result = cfgpp.invert_cfgpp_measured(
        model, x, ascending, {"cond_scale": 0.6}, callback=seen.append, disable=True, iterations=iterations
    )
    total = cfgpp.inversion_progress_steps(n, iterations)
    assert total == 4 * n
    assert [d["step"] for d in seen] == list(range(total)) and all(d["steps"] == total for d in seen)
    phases = ["invert", "refine", "check plain", "check refined"]
    assert [d["phase"] for d in seen] == [p for p in phases for _ in range(n)]
    assert [d["i"] for d in seen] == list(range(n)) * 4
    up = [float(s) for s in ascending[1:]]
    down = [float(s) for s in ascending.flip(0)[1:]]
    assert [float(d["sigma"]) for d in seen] == up + up + down + down
    assert all(d["x"].shape == x.shape and d["denoised"].shape == x.shape for d in seen)
    calls = len(model.sigmas)
    assert result.model_calls == calls
    assert 5 * n < calls <= cfgpp.inversion_max_model_calls(n, iterations) == n * (iterations + 5)
    assert model.sigmas[-2 * n :] == [float(s) for s in ascending.flip(0)[:-1]] * 2  # the round trips


def test_round_trip_draws_no_noise():
    """The measured round trips must not move the host's random stream (the WebUI seeds it per image)."""
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=2)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    _invert(GuidedModel(cond, uncond), x, grid("karras", 5).flip(0), iterations=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_default_round_trip_is_sample_euler_cfgpp_bit_for_bit():
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=4)
    sigmas = grid("karras", 8)
    extra = {"cond_scale": 0.8}
    result = cfgpp.invert_cfgpp_measured(
        GuidedModel(cond, uncond), x, sigmas.flip(0), extra, disable=True, iterations=3
    )
    back = cfgpp.sample_euler_cfgpp(GuidedModel(cond, uncond), result.latent, sigmas, extra, disable=True)
    assert torch.equal((back - x).flatten(1).norm(dim=1), result.error)


def test_a_round_trip_sampler_sees_the_model_and_reports_progress():
    cond, uncond = PAIRS["mixture"]()
    x = clean_latents("mixture", batch=2)
    sigmas = grid("ddim", 5)
    model = GuidedModel(cond, uncond)
    seen_models, phases = [], []

    def consumer(m, y, descending, extra_args=None, callback=None, disable=None):
        seen_models.append(m.cond)  # an attribute of the host's model, read through
        return cfgpp.sample_ddim_cfgpp(m, y, descending, extra_args, callback=callback, disable=disable)

    result = cfgpp.invert_cfgpp_measured(
        model,
        x,
        sigmas.flip(0),
        {"cond_scale": 0.6},
        callback=lambda d: phases.append((d["phase"], d["step"])),
        disable=True,
        iterations=2,
        round_trip=consumer,
    )
    assert seen_models == [cond, cond]
    assert [s for _, s in phases] == list(range(20))
    assert [p for p, _ in phases][10:] == ["check plain"] * 5 + ["check refined"] * 5
    assert result.model_calls == len(model.sigmas)


def test_bad_round_trip_is_refused():
    with pytest.raises(ValueError, match="round_trip"):
        _invert(GuidedModel(*PAIRS["gaussian"]()), initial_x(1.0), grid("karras", 3).flip(0), round_trip=3)


def test_scale_comes_from_extra_args():
    cond, uncond = PAIRS["gaussian"]()
    x = clean_latents("gaussian", batch=2)
    ascending = grid("karras", 5).flip(0)
    at_zero = _invert(GuidedModel(cond, uncond), x, ascending, lam=0.0)
    uncond_only = _invert(GuidedModel(uncond, uncond), x, ascending, lam=0.7)
    assert float((at_zero - uncond_only).abs().max()) <= 1e-12
    assert float((_invert(GuidedModel(cond, uncond), x, ascending, lam=0.7) - at_zero).abs().max()) > 1e-3


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (torch.tensor([0.0, 2.0, 1.0]), "ascend"),
        (torch.tensor([-0.1, 1.0]), "> 0"),
        (torch.tensor([0.0, 0.0, 1.0]), "> 0"),
        (torch.tensor([0.0, float("nan")]), "finite"),
        (torch.ones(2, 2), "one-dimensional"),
    ],
)
def test_bad_sigmas_are_refused(sigmas, message):
    with pytest.raises(ValueError, match=message):
        _invert(GuidedModel(*PAIRS["gaussian"]()), initial_x(1.0), sigmas)


@pytest.mark.parametrize("iterations", [-1, True, 1.5, "2"])
def test_bad_iterations_are_refused(iterations):
    with pytest.raises(ValueError, match="iterations"):
        _invert(
            GuidedModel(*PAIRS["gaussian"]()),
            initial_x(1.0),
            grid("karras", 3).flip(0),
            iterations=iterations,
        )
