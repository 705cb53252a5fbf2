"""Structural identities of CFG++ (CFGPP.md §1.2-1.4), model-call counts and callbacks."""

from __future__ import annotations

import inspect
import math

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import (
    ALPHAS_CUMPROD,
    PAIRS,
    SIGMA_TABLE,
    GuidedModel,
    NoiseQueue,
    TorchWithQueue,
    grid,
    initial_x,
    plain_model,
)

# --- Euler CFG++ is plain CFG with w_n = λ σ_n / (σ_n − σ_{n+1}) ----------------------------------


@pytest.mark.parametrize(
    "kind,steps,ending",
    [("karras", 20, "zero"), ("exponential", 10, "positive"), ("uniform", 15, "tail"), ("ddim", 25, "zero")],
)
def test_euler_cfgpp_is_euler_cfg_with_per_step_scale(kind, steps, ending):
    cond, uncond = PAIRS["mixture"]()
    sigmas = grid(kind, steps, ending)
    lam = 0.7
    scales = cfgpp.equivalent_cfg_scales(sigmas, lam)
    by_sigma = {float(s): float(w) for s, w in zip(sigmas[:-1], scales)}

    def cfg_model(x, sigma, **_):
        w = by_sigma[float(sigma[0])]
        d_c, d_u = cond(x, sigma), uncond(x, sigma)
        return d_u + w * (d_c - d_u)

    x = initial_x(sigmas[0])
    out = cfgpp.sample_euler_cfgpp(GuidedModel(cond, uncond), x, sigmas, {"cond_scale": lam}, disable=True)
    expected = ks.sample_euler(cfg_model, x, sigmas, disable=True)
    assert float((out - expected).abs().max()) <= 1e-11
    if ending != "positive":
        assert scales[-1] == pytest.approx(lam)  # the last step to σ = 0 has w = λ


# --- DDIM CFG++ is the WebUI 1.10 built-in `ddim_cfgpp` on its grid -------------------------------


def webui_timesteps(steps):
    """The WebUI 1.10 DDIM timesteps: 0, k, 2k, ... (k = 1000 // steps) shifted by one, clipped to 999."""
    return [min(t + 1, 999) for t in range(0, 1000, 1000 // steps)]


def webui_ddim_cfgpp(eps_pair, z, timesteps, cfg_scale, eta, randn_like):
    """The built-in's update, re-derived: timestep model returning eps; λ = CFG × (1/12.5); N − 1 steps
    from the last timestep down to the first; eps_u renoises; σ_t · randn_like on every step."""
    ac = ALPHAS_CUMPROD
    ts = torch.tensor(timesteps)
    alphas = ac[ts]
    alphas_prev = ac[torch.cat([ts.new_zeros(1), ts[:-1]])]
    if eta == 0:
        noise_sd = torch.zeros_like(alphas_prev)
    else:
        noise_sd = eta * ((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev)).sqrt()
    lam = cfg_scale / 12.5
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_c, e_u = eps_pair(z, timesteps[index])
        e_t = e_u + lam * (e_c - e_u)
        a_t, a_prev, sd = alphas[index], alphas_prev[index], noise_sd[index]
        pred_x0 = (z - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        dir_xt = (1 - a_prev - sd**2).sqrt() * e_u
        z = a_prev.sqrt() * pred_x0 + dir_xt + sd * randn_like(z)
    return z


def vp_eps(denoiser):
    """eps(z, t) of a VE x0-denoiser: x = z / √ᾱ_t, σ_t = √((1−ᾱ_t)/ᾱ_t), eps = (x − D(x, σ_t)) / σ_t."""

    def eps(z, t):
        a = ALPHAS_CUMPROD[t]
        sigma = ((1 - a) / a).sqrt()
        x = z / a.sqrt()
        return (x - denoiser(x, sigma)) / sigma

    return eps


@pytest.mark.parametrize(
    "pair,steps",
    [("gaussian", 1), ("gaussian", 30), ("gaussian", 50), ("mixture", 1), ("mixture", 10), ("mixture", 30)],
)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_cfgpp_matches_webui_builtin(pair, steps, eta, monkeypatch):
    # Over 50 steps at λ = 0.56 the off-manifold mixture is chaotic (a 1e-13 relative nudge of z
    # moves the result by ~1e-8), so the mixture is checked up to 30 steps, where float64 resolves 1e-11.
    cond, uncond = PAIRS[pair]()
    eps_c, eps_u = vp_eps(cond), vp_eps(uncond)
    timesteps = webui_timesteps(steps)
    assert cfgpp.ddim_timesteps(steps) == timesteps
    cfg_scale = 7.0
    z = initial_x(1.0)

    builtin_noise = NoiseQueue(11)
    expected = webui_ddim_cfgpp(
        lambda zz, t: (eps_c(zz, t), eps_u(zz, t)),
        z,
        timesteps,
        cfg_scale,
        eta,
        TorchWithQueue(builtin_noise).randn_like,
    )

    ours_noise = NoiseQueue(11)
    monkeypatch.setattr(ks, "torch", TorchWithQueue(ours_noise))
    sigmas = cfgpp.ddim_sigmas(ALPHAS_CUMPROD, steps, final_zero=False)
    a_first, a_last = ALPHAS_CUMPROD[timesteps[-1]], ALPHAS_CUMPROD[timesteps[0]]
    lam = cfgpp.lambda_from_cfg(cfg_scale, "cfg/12.5")
    out = cfgpp.sample_ddim_cfgpp(
        GuidedModel(cond, uncond), z / a_first.sqrt(), sigmas, {"cond_scale": lam}, disable=True, eta=eta
    )
    assert len(ours_noise.requests) == len(builtin_noise.requests) == len(timesteps) - 1
    assert float((out * a_last.sqrt() - expected).abs().max()) <= 1e-11


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 30, 33, 50, 150, 500])
def test_ddim_grids_match_the_webui(steps):
    assert cfgpp.ddim_timesteps(steps) == webui_timesteps(steps)
    # The "DDIM" schedule type: sigma table at arange(1, 1000, 1000 // n), flipped, then 0.
    table = SIGMA_TABLE[torch.arange(1, 1000, max(1000 // steps, 1))].flip(0)
    assert torch.allclose(
        cfgpp.ddim_sigmas(ALPHAS_CUMPROD, steps), torch.cat([table, table.new_zeros(1)]), rtol=1e-14, atol=0
    )
    assert torch.allclose(
        cfgpp.ddim_sigmas(ALPHAS_CUMPROD, steps, final_zero=False), table, rtol=1e-14, atol=0
    )


# --- "unconditional step + guidance vector" (U+G) -------------------------------------------------


@pytest.mark.parametrize("name", ["euler", "euler_a", "dpmpp_2m", "ddim"])
def test_one_step_is_unconditional_step_plus_guidance(name):
    fn, base, kwargs = {
        "euler": (cfgpp.sample_euler_cfgpp, ks.sample_euler, {}),
        "euler_a": (cfgpp.sample_euler_ancestral_cfgpp, ks.sample_euler_ancestral, {"eta": 0.8}),
        "dpmpp_2m": (cfgpp.sample_dpmpp_2m_cfgpp, ks.sample_dpmpp_2m, {}),
        "ddim": (cfgpp.sample_ddim_cfgpp, ks.sample_euler_ancestral, {"eta": 0.4}),
    }[name]
    cond, uncond = PAIRS["mixture"]()
    lam = 0.9
    for sigmas in (
        torch.tensor([3.0, 1.2], dtype=torch.float64),
        torch.tensor([0.8, 0.0], dtype=torch.float64),
    ):
        x = initial_x(sigmas[0])
        torch.manual_seed(3)
        out = fn(GuidedModel(cond, uncond), x, sigmas, {"cond_scale": lam}, disable=True, **kwargs)
        torch.manual_seed(3)
        u_step = base(plain_model(uncond), x, sigmas, disable=True, **kwargs)
        guidance = lam * (cond(x, sigmas[0]) - uncond(x, sigmas[0]))
        assert float((out - (u_step + guidance)).abs().max()) <= 1e-12


def test_dpmpp_2m_variant_a_adds_extrapolated_guidance():
    """A − B = (1 − e^{−h}) / (2r) · λ (D_c − D_u) at the step's point (variants share the first step)."""
    cond, uncond = PAIRS["mixture"]()
    lam = 0.8
    sigmas = torch.tensor([6.0, 2.0, 0.9], dtype=torch.float64)
    x = initial_x(sigmas[0])
    model = GuidedModel(cond, uncond)
    x_a = cfgpp.sample_dpmpp_2m_cfgpp(model, x, sigmas, {"cond_scale": lam}, disable=True, variant="A")
    x_b = cfgpp.sample_dpmpp_2m_cfgpp(model, x, sigmas, {"cond_scale": lam}, disable=True, variant="b")
    x_1 = cfgpp.sample_euler_cfgpp(model, x, sigmas[:2], {"cond_scale": lam}, disable=True)
    h = math.log(2.0 / 0.9)
    r = math.log(6.0 / 2.0) / h
    guidance = lam * (cond(x_1, sigmas[1]) - uncond(x_1, sigmas[1]))
    assert float((x_a - x_b - (-math.expm1(-h)) / (2 * r) * guidance).abs().max()) <= 1e-12


# --- model calls and callbacks --------------------------------------------------------------------


def _expected_calls(info, n_steps, ends_at_zero):
    if info.options.get("second_order"):
        return 2 * n_steps - (1 if ends_at_zero else 0)
    return n_steps


@pytest.mark.parametrize("info", cfgpp.SAMPLERS, ids=lambda i: i.key)
@pytest.mark.parametrize("ending", ["zero", "positive"])
def test_model_calls_and_callbacks(info, ending):
    cond, uncond = PAIRS["gaussian"]()
    sigmas = grid("karras", 9, ending)
    n_steps = len(sigmas) - 1
    outputs = []

    class Recording(GuidedModel):
        def __call__(self, *args, **kwargs):
            outputs.append(super().__call__(*args, **kwargs))
            return outputs[-1]

    model = Recording(cond, uncond)
    seen = []
    kwargs = (
        {"noise_sampler": NoiseQueue(1).noise_sampler}
        if "noise_sampler" in inspect.signature(info.function).parameters
        else {}
    )
    info.function(
        model, initial_x(sigmas[0]), sigmas, {"cond_scale": 0.5}, callback=seen.append, disable=True, **kwargs
    )

    assert len(model.sigmas) == _expected_calls(info, n_steps, ending == "zero")
    assert [c["i"] for c in seen] == list(range(n_steps))
    for c in seen:
        assert set(c) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(c["sigma"]) == float(sigmas[c["i"]])
        assert float(c["sigma_hat"]) == float(sigmas[c["i"]])
        # the preview is the guided prediction at the step's own point
        assert any(c["denoised"] is o for o in outputs)
    # the first model call of every step happens at sigma_i
    first_calls = [s for s in model.sigmas if any(s == float(t) for t in sigmas[:-1])]
    assert len(first_calls) >= n_steps


def test_euler_churn_callback_reports_sigma_hat():
    cond, uncond = PAIRS["gaussian"]()
    sigmas = grid("karras", 5)
    seen = []
    torch.manual_seed(0)
    cfgpp.sample_euler_cfgpp(
        GuidedModel(cond, uncond),
        initial_x(sigmas[0]),
        sigmas,
        {"cond_scale": 0.5},
        callback=seen.append,
        disable=True,
        s_churn=1.0,
    )
    gamma = min(1.0 / 5, 2**0.5 - 1)
    for c in seen:
        assert float(c["sigma_hat"]) == pytest.approx(float(c["sigma"]) * (1 + gamma))
