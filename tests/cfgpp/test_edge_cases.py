"""Edge cases: no/stale unconditional prediction, last step to 0, batch > 1, float16, noise sources,
bad arguments."""

from __future__ import annotations

import inspect
import logging

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import PAIRS, SHAPE, GuidedModel, NoiseQueue, TorchWithQueue, grid, initial_x, plain_model
from .test_kdiffusion_degenerate import BASES

ALL = [info.function for info in cfgpp.SAMPLERS]
IDS = [info.key for info in cfgpp.SAMPLERS]


def _takes_noise_sampler(fn):
    return "noise_sampler" in inspect.signature(fn).parameters


# --- no unconditional prediction ------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BASES))
def test_model_without_uncond_runs_the_base_sampler_on_the_guided_model(case):
    fn, base, kwargs = BASES[case]
    cond, uncond = PAIRS["mixture"]()
    guided = GuidedModel(cond, uncond)
    for kind, steps, ending in [("karras", 8, "zero"), ("exponential", 5, "positive")]:
        sigmas = grid(kind, steps, ending)
        x = initial_x(sigmas[0])
        torch.manual_seed(9)
        out = fn(
            lambda xx, s, **ea: guided(xx, s, **ea), x, sigmas, {"cond_scale": 1.7}, disable=True, **kwargs
        )
        torch.manual_seed(9)
        expected = base(guided, x, sigmas, {"cond_scale": 1.7}, disable=True, **kwargs)
        assert float((out - expected).abs().max()) <= 1e-11


class _StaleModel(GuidedModel):
    """Sets the attribute on its first call only (e.g. a hijack that bypasses the stash afterwards)."""

    def __call__(self, x, sigma, cond_scale, **kw):
        before = self.last_denoised_uncond
        out = super().__call__(x, sigma, cond_scale, **kw)
        if len(self.sigmas) > 1:
            self.last_denoised_uncond = before
        return out


class _WrongShapeModel(GuidedModel):
    def __call__(self, x, sigma, cond_scale, **kw):
        out = super().__call__(x, sigma, cond_scale, **kw)
        if len(self.sigmas) > 1:
            self.last_denoised_uncond = self.last_denoised_uncond[:1]
        return out


class _ReadOnlyModel:
    """Exposes the uncond prediction through a read-only property (clearing it must not fail)."""

    def __init__(self, cond, uncond):
        self.inner = GuidedModel(cond, uncond)

    @property
    def last_denoised_uncond(self):
        return self.inner.last_denoised_uncond

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_stale_or_malformed_uncond_is_never_used(fn, caplog):
    cond, uncond = PAIRS["mixture"]()
    sigmas = grid("karras", 6, "positive")
    x = initial_x(sigmas[0])

    def run(model):
        kwargs = {"noise_sampler": NoiseQueue(3).noise_sampler} if _takes_noise_sampler(fn) else {}
        torch.manual_seed(1)
        return fn(model, x, sigmas, {"cond_scale": 0.8}, disable=True, **kwargs)

    only_first = run(GuidedModel(cond, uncond, provide=lambda k: k == 0))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lib_hidiff.cfgpp"):
        stale = run(_StaleModel(cond, uncond))
    assert torch.equal(stale, only_first)
    warnings = [r for r in caplog.records if "unconditional prediction" in r.getMessage()]
    assert len(warnings) == 1  # once per run, not once per step

    assert torch.equal(run(_WrongShapeModel(cond, uncond)), only_first)
    assert torch.equal(run(_ReadOnlyModel(cond, uncond)), run(GuidedModel(cond, uncond)))


# --- last step to 0, truncated schedules ----------------------------------------------------------


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_last_step_to_zero_returns_the_guided_prediction(fn):
    cond, uncond = PAIRS["mixture"]()
    outputs = []

    class Recording(GuidedModel):
        def __call__(self, *args, **kwargs):
            outputs.append(super().__call__(*args, **kwargs))
            return outputs[-1]

    for sigmas in (grid("karras", 7), grid("ddim", 4, "tail"), torch.tensor([2.0, 0.0], dtype=torch.float64)):
        out = fn(Recording(cond, uncond), initial_x(sigmas[0]), sigmas, {"cond_scale": 1.1}, disable=True)
        assert torch.equal(out, outputs[-1])


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_schedule_without_steps_returns_input(fn):
    x = initial_x(1.0)
    assert (
        fn(GuidedModel(*PAIRS["gaussian"]()), x, torch.tensor([1.0]), {"cond_scale": 1.0}, disable=True) is x
    )


# --- batch > 1 ------------------------------------------------------------------------------------


class _PerSampleNoise:
    """Deterministic noise for a batch: draw k is seeded by k; a single-sample run takes its row."""

    def __init__(self, rows):
        self.rows, self.k = rows, 0

    def __call__(self, sigma, sigma_next):
        g = torch.Generator().manual_seed(1000 + self.k)
        self.k += 1
        return torch.randn((3, *SHAPE[1:]), generator=g, dtype=torch.float64)[self.rows]


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_batch_items_are_independent(fn):
    cond, uncond = PAIRS["mixture"]()
    sigmas = grid("karras", 6)
    x = initial_x(sigmas[0], shape=(3, *SHAPE[1:]))
    kwargs = lambda rows: {"noise_sampler": _PerSampleNoise(rows)} if _takes_noise_sampler(fn) else {}  # noqa: E731
    batch = fn(GuidedModel(cond, uncond), x, sigmas, {"cond_scale": 0.9}, disable=True, **kwargs(slice(None)))
    for b in range(3):
        single = fn(
            GuidedModel(cond, uncond),
            x[b : b + 1],
            sigmas,
            {"cond_scale": 0.9},
            disable=True,
            **kwargs(slice(b, b + 1)),
        )
        assert float((batch[b : b + 1] - single).abs().max()) <= 1e-12


# --- float16 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_float16_inputs(fn):
    """fp16 latents and model outputs with float32 sigmas (as the WebUI passes them): the result stays
    fp16, finite, and close to the float64 run with the same noise."""
    cond, uncond = PAIRS["mixture"]()
    sigmas = grid("karras", 10)
    x = initial_x(sigmas[0])

    def noise(dtype):
        queue = NoiseQueue(4)
        return {"noise_sampler": lambda s, sn: torch.from_numpy(queue.draw(None)).to(dtype)}

    kw16 = noise(torch.float16) if _takes_noise_sampler(fn) else {}
    kw64 = noise(torch.float64) if _takes_noise_sampler(fn) else {}
    out16 = fn(GuidedModel(cond, uncond), x.half(), sigmas.float(), {"cond_scale": 0.7}, disable=True, **kw16)
    out64 = fn(GuidedModel(cond, uncond), x, sigmas, {"cond_scale": 0.7}, disable=True, **kw64)
    assert out16.dtype == torch.float16
    assert bool(torch.isfinite(out16).all())
    assert float((out16.double() - out64).abs().max()) <= 5e-3 * float(out64.abs().max())


def test_float16_with_the_default_brownian_noise():
    cond, uncond = PAIRS["gaussian"]()
    sigmas = grid("karras", 6).float()
    torch.manual_seed(0)
    out = cfgpp.sample_dpmpp_sde_cfgpp(
        GuidedModel(cond, uncond), initial_x(sigmas[0]).half(), sigmas, {"cond_scale": 0.7}, disable=True
    )
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())


# --- where noise comes from -----------------------------------------------------------------------


def _forbid_global_rng(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("drew from torch's global generator")

    for name in ("randn_like", "randn", "rand", "rand_like", "randint", "normal"):
        monkeypatch.setattr(torch, name, forbidden)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_noise_only_from_noise_sampler_or_kdiffusion_torch(fn, monkeypatch):
    cond, uncond = PAIRS["gaussian"]()
    sigmas = grid("karras", 5, "positive")
    x = initial_x(sigmas[0])
    queue = NoiseQueue(2)
    proxy = TorchWithQueue(queue)
    monkeypatch.setattr(ks, "torch", proxy)
    _forbid_global_rng(monkeypatch)
    given = NoiseQueue(3)
    if fn is cfgpp.sample_dpmpp_sde_cfgpp:  # default: a Brownian tree (torchsde), so pass one
        fn(
            GuidedModel(cond, uncond),
            x,
            sigmas,
            {"cond_scale": 0.5},
            disable=True,
            noise_sampler=given.noise_sampler,
        )
    else:
        fn(GuidedModel(cond, uncond), x, sigmas, {"cond_scale": 0.5}, disable=True)  # default noise
        if _takes_noise_sampler(fn):
            assert proxy.randn_like_calls == len(sigmas) - 1  # one draw per step that ends above 0
            fn(
                GuidedModel(cond, uncond),
                x,
                sigmas,
                {"cond_scale": 0.5},
                disable=True,
                noise_sampler=given.noise_sampler,
            )
            assert proxy.randn_like_calls == len(sigmas) - 1  # none through randn_like when given
    if _takes_noise_sampler(fn) and fn is not cfgpp.sample_dpmpp_2m_cfgpp:
        assert len(given.requests) > 0


# --- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,needle",
    [
        (
            lambda m, x, s: cfgpp.sample_dpmpp_2m_cfgpp(
                m, x, s, {"cond_scale": 1}, disable=True, variant="C"
            ),
            "DPM++ 2M CFG++ variant must be 'A' or 'B'",
        ),
        (
            lambda m, x, s: cfgpp.sample_ddim_cfgpp(m, x, s, {"cond_scale": 1}, disable=True, eta=1.5),
            "DDIM CFG++ eta must be in [0, 1]",
        ),
        (
            lambda m, x, s: cfgpp.sample_ddim_cfgpp(m, x, s, {"cond_scale": 1}, disable=True, eta=-0.1),
            "DDIM CFG++ eta must be in [0, 1]",
        ),
        (
            lambda m, x, s: cfgpp.sample_dpmpp_sde_cfgpp(m, x, s, {"cond_scale": 1}, disable=True, r=0),
            "DPM++ SDE CFG++ r must be in (0, 1]",
        ),
        (
            lambda m, x, s: cfgpp.ddim_sigmas(torch.ones(1000), 0),
            "DDIM steps must be an integer in [1, 1000]",
        ),
        (lambda m, x, s: cfgpp.ddim_timesteps(1001), "DDIM steps must be an integer in [1, 1000]"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call, needle):
    sigmas = grid("karras", 3)
    with pytest.raises(ValueError) as err:
        call(GuidedModel(*PAIRS["gaussian"]()), initial_x(sigmas[0]), sigmas)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_plain_model_has_no_uncond_attribute():
    # guards the fallback tests above: the plain model really lacks the attribute
    assert not hasattr(plain_model(PAIRS["gaussian"]()[1]), cfgpp.UNCOND_ATTR)
