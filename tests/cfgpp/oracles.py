"""Closed-form denoisers, a guided test model, noise schedules and replayable noise for CFG++ tests.

Exact denoisers of Gaussians and Gaussian mixtures in k-diffusion's VE coordinates
(x = x0 + σ n): D(x, σ) = E[x0 | x]. Everything is computed in float64 and returned in x's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import k_diffusion.external as kext
import k_diffusion.sampling as ks
import numpy as np
import torch

from lib_hidiff import cfgpp

# SD1.x/SDXL training schedule ("scaled linear" betas).
ALPHAS_CUMPROD = torch.cumprod(
    1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, dim=0
)
SIGMA_TABLE = ((1 - ALPHAS_CUMPROD) / ALPHAS_CUMPROD).sqrt()  # ascending in t
SIGMA_MIN, SIGMA_MAX = float(SIGMA_TABLE[0]), float(SIGMA_TABLE[-1])

SHAPE = (2, 3, 2, 2)  # batch 2, 12 dimensions per sample


def _sigma_b(sigma, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return s.reshape(-1, *[1] * (x.ndim - 1)) if s.ndim else s


@dataclass
class Gaussian:
    """x0 ~ N(mean, std² I): D = mean + std² / (std² + σ²) (x − mean)."""

    mean: torch.Tensor  # one sample's shape
    std: float

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x64, s = x.double(), _sigma_b(sigma, x)
        v = self.std**2
        return (self.mean + v / (v + s**2) * (x64 - self.mean)).to(x.dtype)


@dataclass
class Mixture:
    """x0 ~ Σ_k w_k N(mean_k, std_k² I): D = Σ_k r_k(x) [mean_k + std_k² / (std_k² + σ²) (x − mean_k)]."""

    means: torch.Tensor  # [K, *sample shape]
    stds: torch.Tensor  # [K]
    weights: torch.Tensor  # [K], sums to 1

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x64 = x.double()
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)  # [B or 1, 1]
        var = self.stds**2  # [K]
        total = var + s**2  # [B, K]
        diff = x64[:, None] - self.means[None]  # [B, K, ...]
        dim = diff[0, 0].numel()
        dist2 = diff.flatten(2).pow(2).sum(-1)
        logits = self.weights.log() - dist2 / (2 * total) - dim / 2 * total.log()
        # By hand: Tensor.softmax on tiny tensors costs milliseconds with a thread pool on this torch.
        resp = (logits - logits.amax(dim=1, keepdim=True)).exp()
        resp = resp / resp.sum(dim=1, keepdim=True)
        expand = (...,) + (None,) * (x.ndim - 1)
        comp = self.means[None] + (var / total)[expand] * diff
        return (resp[expand] * comp).sum(1).to(x.dtype)


def gaussian_pair(seed: int = 0) -> tuple[Gaussian, Gaussian]:
    g = torch.Generator().manual_seed(seed)
    sample = SHAPE[1:]
    cond = Gaussian(torch.randn(sample, generator=g, dtype=torch.float64) + 1.0, 0.5)
    uncond = Gaussian(torch.zeros(sample, dtype=torch.float64), 1.0)
    return cond, uncond


def mixture_pair(seed: int = 0) -> tuple[Gaussian, Mixture]:
    """uncond: 4 separated modes; cond: a Gaussian between two of them (off the uncond manifold)."""
    g = torch.Generator().manual_seed(seed)
    # modes 3.4 to 6.2 apart, stds 0.3 to 0.5: wider spacing makes some trajectories chaotic at the
    # level of float64 rounding, and float64 exactness tests could no longer resolve 1e-10
    means = torch.randn((4, *SHAPE[1:]), generator=g, dtype=torch.float64)
    uncond = Mixture(
        means,
        torch.tensor([0.3, 0.4, 0.5, 0.35], dtype=torch.float64),
        torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
    )
    cond = Gaussian((means[0] + means[1]) / 2, 0.3)
    return cond, uncond


PAIRS = {"gaussian": gaussian_pair, "mixture": mixture_pair}


class GuidedModel:
    """The CFG++ model contract over two denoisers.

    Returns D_u + λ (D_c − D_u) with λ = cond_scale and sets `last_denoised_uncond` = D_u, except on
    calls where `provide(call_index)` is False (then None, as when a WebUI skips the uncond pass).
    Records every call's sigma.
    """

    def __init__(self, cond, uncond, provide=None):
        self.cond, self.uncond = cond, uncond
        self.provide = provide
        self.last_denoised_uncond = None
        self.sigmas: list[float] = []

    def __call__(self, x, sigma, cond_scale, **_):
        d_c, d_u = self.cond(x, sigma), self.uncond(x, sigma)
        provided = self.provide is None or self.provide(len(self.sigmas))
        self.sigmas.append(float(torch.as_tensor(sigma).flatten()[0]))
        self.last_denoised_uncond = d_u if provided else None
        return d_u + cond_scale * (d_c - d_u)


def plain_model(denoiser):
    """A k-diffusion model (x, sigma, **extra_args) -> x0 without any CFG++ attribute."""
    return lambda x, sigma, **_: denoiser(x, sigma)


def cfg_model(cond, uncond):
    """Plain CFG with the scale from extra_args: D_u + w (D_c − D_u)."""

    def model(x, sigma, cond_scale, **_):
        d_c, d_u = cond(x, sigma), uncond(x, sigma)
        return d_u + cond_scale * (d_c - d_u)

    return model


# --- schedules ------------------------------------------------------------------------------------


def _build(kind: str, steps: int) -> torch.Tensor:
    if kind == "karras":
        return ks.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=7.0).double()
    if kind == "exponential":
        return ks.get_sigmas_exponential(steps, SIGMA_MIN, SIGMA_MAX).double()
    if kind == "uniform":  # the WebUI's "Automatic" for Euler: uniform in t over the model's table
        return kext.DiscreteSchedule(SIGMA_TABLE, quantize=False).get_sigmas(steps).double()
    if kind == "ddim":
        return cfgpp.ddim_sigmas(ALPHAS_CUMPROD, steps)
    raise ValueError(kind)


def grid(kind: str, steps: int, ending: str = "zero") -> torch.Tensor:
    """`steps` steps of a schedule kind. ending: "zero" (txt2img), "positive" (stops above 0),
    "tail" (the last steps of a twice-as-long schedule, as img2img uses)."""
    if ending == "zero":
        return _build(kind, steps)
    if ending == "positive":
        return _build(kind, steps + 1)[: steps + 1]
    if ending == "tail":
        return _build(kind, 2 * steps)[-(steps + 1) :]
    raise ValueError(ending)


KINDS = ("karras", "exponential", "uniform", "ddim")
STEPS = (1, 2, 10, 20)
ENDINGS = ("zero", "positive", "tail")


# --- replayable noise -----------------------------------------------------------------------------


@dataclass
class NoiseQueue:
    """Standard normal draws from a seeded stream, handed out in order and recorded.

    Two queues with the same seed give the same draws, so a reference and a sampler can share noise
    and their draw requests (sigma, sigma_next), or None for a randn_like draw, can be compared.
    """

    seed: int
    shape: tuple = SHAPE
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def draw(self, request) -> np.ndarray:
        self.requests.append(request)
        return self._rng.standard_normal(self.shape)

    def noise_sampler(self, sigma, sigma_next) -> torch.Tensor:
        return torch.from_numpy(self.draw((float(sigma), float(sigma_next))))


class TorchWithQueue:
    """Stands in for `k_diffusion.sampling.torch` (as the WebUI's TorchHijack does): randn_like
    comes from a NoiseQueue, everything else is torch."""

    def __init__(self, queue: NoiseQueue):
        self.queue = queue
        self.randn_like_calls = 0

    def randn_like(self, x, **_):
        self.randn_like_calls += 1
        return torch.from_numpy(self.queue.draw(None)).to(dtype=x.dtype, device=x.device)

    def __getattr__(self, name):
        return getattr(torch, name)


def initial_x(sigma0: float, seed: int = 123, shape=SHAPE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * float(sigma0)
