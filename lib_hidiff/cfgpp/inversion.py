"""CFG++ inversion: the latent that Euler CFG++ / DDIM CFG++ (η = 0) takes back to a given clean latent.

One forward Euler CFG++ step from σ_hi down to σ_lo, with ρ = σ_lo / σ_hi and D at (x_hi, σ_hi), is

    x_lo = F(x_hi) = D_λ(x_hi) + ρ (x_hi − D_u(x_hi)).

Inverting a step means solving F(y) = x_lo for y. The residual r(y) = F(y) − x_lo is what every update
below works on.

Plain step (iterations = 0), the CFG++ paper's DDIM inversion (arXiv 2406.08070, official
`InversionDDIMCFGpp.inversion`): freeze the model's noise predictions at the current latent and
solve the step for the other end,

    x̂0 = x_lo − σ_lo ε_u,   y = x̂0 + σ_hi ε_λ,   ε = (y₀ − D(y₀, σ_hi)) / σ_hi,

where the model is read at the *current* latent with the *higher* noise level. "Current latent" is
meant in the model's own input scale, as in the paper's VP code (the UNet sees x / √(1 + σ²)): in VE
coordinates that point is y₀ = x_lo √((1 + σ_hi²)/(1 + σ_lo²)), a better guess of x_hi at high
noise than x_lo itself. Written with the residual, the plain step is one Richardson step from y₀:
y₁ = y₀ − r(y₀).

Refinement (iterations = k > 0): solve r(y) = 0 per step (the refined chain, up to k + 2 model calls
per step) by iterating
y ← y_b − α r(y_b) from the best point y_b, with one scalar length α per sample taken from the secant
(Barzilai–Borwein) α = ⟨s, q⟩ / ⟨q, q⟩, s and q the differences of point and residual between y_b and
the latest trial, clipped to [1, min(1/ρ, 2)]. Why it contracts: on a Gaussian, D is affine with
Jacobian c = v/(v + σ²) per direction, so r is affine with Jacobian
J = (1 − λ − ρ) c_u + λ c_c + ρ, which lies in [ρ, 1] without guidance (in [min(ρ, 1 − λ), max(1, λ + ρ)]
for λ in [0, 1]), and each iteration multiplies the residual's component along a direction by 1 − α J.
- α = 1 (the plain step repeated at the new point) gives 1 − J: it always contracts, but only by
  1 − ρ in the slow directions (high noise, c ≈ 0).
- The naive map y ← (x_lo − D_λ(y))/ρ + D_u(y) is α = 1/ρ everywhere with factor c (1/ρ − 1) (unguided):
  it diverges at low noise (c ≈ 1) once σ_hi > 2 σ_lo, and cannot take a step from σ = 0 at all.
- The secant measures 1/J along the last move; clipping it to [1, min(1/ρ, 2)] keeps |1 − α J| < 1 in
  every direction of an unguided Gaussian (strictly when ρ > 1/2 or J < 1) while taking the slow
  directions down fast; where J is a multiple of the identity it converges in a few iterations.
  Unclipped Barzilai–Borwein lengths (up to 1/J_min) were measured to blow the round trip up
  400-fold after 5 iterations on an anisotropic Gaussian with λ = 1 and 50 steps (docs/cfgpp.md).
Safety on non-linear denoisers (mixtures, real UNets):
- The plain step is the first candidate; a trial whose residual is not smaller than the best one's is
  never kept, so no measured result has a larger forward residual than the plain step.
- After a failed trial the next one backtracks from the best point, with the failed line's secant
  length but at most half the previous length; a sample stops at rounding level, or once its length
  has shrunk below ALPHA_MIN / 256.
- The result is the best *measured* point: an unmeasured last step (tempting when the iteration
  converges fast, as on a Gaussian) was measured to make a mixture's round trip up to 2 % worse than
  no refinement, so refinement never ends on one: the first extra call measures the plain step,
  each of the k others a refined point.

The round-trip guarantee: a smaller residual per step does not make the *round trip* better. Where a
step has no exact preimage nearby (near a boundary between modes the residual can stall at a fair
fraction of the modes' distance), the iteration may move far, and sampling back then follows another
branch: on a 3-mode mixture, 10 iterations sent 8 of 32 samples to the neighbouring mode (round trip
1.9 against 0.12 plain). So iterations = k computes both chains, the plain one (1 call per step) and
the refined one, samples each back with the consumer's sampler (Euler CFG++, 1 call per step each),
and keeps, per sample, the refined latent only where its measured round-trip error is strictly
smaller (a tie keeps the paper's point). That rests on measurement only, so it holds on any model
whose samples do not influence each other in a batch, and costs at most (k + 5) calls per step.
Variants measured on mixture families and not taken: leaving a step plain where the refinement
stalls (more samples fall back, no gain), a trust region around the plain step (fewer fall back, but
less gain for the others).

σ = 0: sigmas[0] may be 0 (a clean latent, as a WebUI schedule ends at 0). The step from 0 is solved
like any other (ρ = 0: D_λ(y, σ_1) = x, the step that lands on D_λ), so `sigmas` can be the sampling
schedule flipped as is, and sampling over it returns to x. The plain step from 0 is y = x + σ_1 ε_λ(y₀).

Other samplers: the inverse is exact only for Euler CFG++ without churn and DDIM CFG++ with η = 0 on
the same sigmas (both take the step above). Ancestral and SDE samplers add fresh noise and DPM++ 2M
uses its history, so from the inverted latent they give an image near the original, with no exact
round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .guided import UNCOND_ATTR, GuidedDenoiser

# After an improving trial the secant length α is clipped to [1, min(1/ρ, ALPHA_CAP)]: 1 is the plain
# step's length, and beyond 1/ρ (or 2) a length overshoots directions where the step's Jacobian is near 1
# (module docstring). Backtracking may shrink it below 1, down to ALPHA_MIN / 2**8, where a sample stops.
ALPHA_CAP = 2.0
ALPHA_MIN = 0.05
# A sample also stops once its residual is at rounding level relative to the latent's norm.
TOL_EPS_FACTOR = 16.0


def _check_sigmas(sigmas) -> torch.Tensor:
    s = torch.as_tensor(sigmas)
    if s.ndim != 1:
        raise ValueError(f"CFG++ inversion: sigmas must be one-dimensional; got shape {tuple(s.shape)}")
    s64 = s.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(s64).all()):
        raise ValueError("CFG++ inversion: sigmas must be finite")
    if s64.numel() > 1:
        if float(s64[0]) < 0 or float(s64[1:].min()) <= 0:
            raise ValueError("CFG++ inversion: sigmas must be > 0 (only sigmas[0] may be 0)")
        if bool((s64[1:] < s64[:-1]).any()):
            raise ValueError("CFG++ inversion: sigmas must ascend (smallest first); flip a sampling schedule")
    return s


def _check_iterations(iterations) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"CFG++ inversion: iterations must be an integer >= 0; got {iterations!r}")
    return iterations


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector [B] shaped to broadcast over `like` (bool stays bool)."""
    v = v.reshape(-1, *[1] * (like.ndim - 1))
    return v if v.dtype == torch.bool else v.to(like.dtype)


class _Step:
    """One inversion step σ_lo → σ_hi: residuals r(y) = F(y) − x_lo; reductions in ≥ float32."""

    def __init__(self, denoise: GuidedDenoiser, x_lo: torch.Tensor, sigma_lo, sigma_hi):
        self.denoise, self.x_lo, self.sigma_hi = denoise, x_lo, sigma_hi
        lo, hi = float(sigma_lo), float(sigma_hi)
        self.rho = lo / hi
        # the current latent in the model's input scale x / √(1 + σ²), read at σ_hi (the paper's point)
        self.scale = math.sqrt((1 + hi**2) / (1 + lo**2))
        # float16 sums of squares over a latent overflow; float64 latents keep float64
        self.acc = torch.float64 if x_lo.dtype == torch.float64 else torch.float32
        self.last_denoised: torch.Tensor | None = None

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        d_lam, d_u = self.denoise(y, self.sigma_hi)
        self.last_denoised = d_lam
        return d_lam + self.rho * (y - d_u) - self.x_lo

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.to(self.acc) * b.to(self.acc)).flatten(1).sum(1)

    def norm(self, a: torch.Tensor) -> torch.Tensor:
        return self.dot(a, a).sqrt()


def _invert_step(step: _Step, iterations: int) -> torch.Tensor:
    y0 = step.x_lo * step.scale
    r0 = step.residual(y0)
    y1 = y0 - r0  # the paper's plain inversion step
    return y1 if iterations == 0 else _refine(step, iterations, y0, r0, y1)


def _refine(step: _Step, iterations: int, y0, r0, y1) -> torch.Tensor:
    """Safeguarded secant (Barzilai–Borwein) iteration on r(y) = 0, per sample; module docstring."""
    x_lo = step.x_lo
    tol = TOL_EPS_FACTOR * torch.finfo(x_lo.dtype).eps * step.norm(x_lo).clamp_min(1e-30)
    alpha_max = min(1 / step.rho, ALPHA_CAP) if step.rho > 0 else ALPHA_CAP
    # y0 only anchors the first secant; the plain step y1 is the first candidate, so no measured
    # result can have a larger residual than the plain step
    anchor_n = step.norm(r0)
    best_y, best_r = y1, r0
    best_n = torch.full_like(anchor_n, math.inf)
    alpha = torch.ones_like(anchor_n)
    done = torch.zeros_like(anchor_n, dtype=torch.bool)
    y = y1
    for _ in range(iterations + 1):  # the plain step, then k refined points, each measured
        r = step.residual(y)
        n = step.norm(r)
        first = torch.isinf(best_n)
        # secant through the latest trial and the best point (the anchor before the first candidate)
        ref_y = torch.where(_per_sample(first, x_lo), y0, best_y)
        ref_r = torch.where(_per_sample(first, x_lo), r0, best_r)
        s, q = y - ref_y, r - ref_r
        qq = step.dot(q, q)
        secant = step.dot(s, q) / qq
        usable = torch.isfinite(secant) & (secant > 0) & (qq > 0)
        improved = (n < best_n) & ~done
        failed = ~improved & ~done
        # improving: the secant length from the new best point; failing: backtrack from the best
        # point with the failed line's secant length, at most half the previous one
        new_alpha = torch.where(usable, secant.clamp(1.0, alpha_max), alpha)
        backtrack = torch.minimum(torch.where(usable, secant.clamp(ALPHA_MIN, alpha_max), alpha), 0.5 * alpha)
        new_alpha = torch.where(failed, backtrack, new_alpha)
        alpha = torch.where(done, alpha, new_alpha)
        imp = _per_sample(improved, x_lo)
        best_y = torch.where(imp, y, best_y)
        best_r = torch.where(imp, r, best_r)
        best_n = torch.where(improved, n, best_n)
        done = done | (best_n <= tol) | (alpha <= ALPHA_MIN * 0.5**8) | (first & ~improved)
        y = torch.where(_per_sample(done, x_lo), best_y, best_y - _per_sample(alpha, x_lo) * best_r)
        if bool(done.all()):
            break
    return best_y  # only measured points: never a larger residual than the plain step


# -- round trips, selection, progress ------------------------------------------------------------
PHASES = ("invert", "refine", "check plain", "check refined")


def inversion_progress_steps(steps: int, iterations: int) -> int:
    """How many callbacks (progress steps) `invert_cfgpp` makes over a schedule of `steps` steps.

    iterations = 0: `steps` (one per inversion step). iterations > 0: 4 × `steps`: the plain chain,
    the refined chain and the two round trips that choose between them, `steps` callbacks each.
    """
    steps, iterations = int(steps), _check_iterations(iterations)
    return max(steps, 0) * (1 if iterations == 0 else len(PHASES))


def inversion_max_model_calls(steps: int, iterations: int) -> int:
    """The most model calls `invert_cfgpp` makes over `steps` steps (each call a cond + uncond batch).

    iterations = 0: `steps`. iterations = k > 0: `steps` × (k + 5): the plain chain (1 per step), the
    refined chain (at most k + 2 per step), and one round trip of each chain (1 per step each). A
    refined sample stops early at rounding level, so the refined chain often costs less.
    """
    steps, iterations = max(int(steps), 0), _check_iterations(iterations)
    return steps if iterations == 0 else steps * (iterations + 5)


class _Counted:
    """The model, counting its calls; the CFG++ attribute reads and writes go to the model."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    @property
    def last_denoised_uncond(self):
        return getattr(self.model, UNCOND_ATTR, None)

    @last_denoised_uncond.setter
    def last_denoised_uncond(self, value) -> None:
        setattr(self.model, UNCOND_ATTR, value)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        # anything else a round_trip sampler reads is the model's own
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)


class _Progress:
    """One callback per step of every phase, with the phase, its step `i` and the running count."""

    def __init__(self, callback, total: int, disable):
        self.callback = callback
        self.total = total
        self.done = 0
        self.bar = tqdm(total=total, disable=disable)

    def __call__(self, phase: str, i: int, x, sigma, denoised) -> None:
        self.bar.update(1)
        if self.callback is not None:
            self.callback(
                {
                    "x": x,
                    "i": i,
                    "sigma": sigma,
                    "sigma_hat": sigma,
                    "denoised": denoised,
                    "phase": phase,
                    "step": self.done,
                    "steps": self.total,
                }
            )
        self.done += 1

    def close(self) -> None:
        self.bar.close()


def _chain(denoise: GuidedDenoiser, x, sigmas, iterations: int, progress: _Progress, phase: str):
    for i in range(len(sigmas) - 1):
        step = _Step(denoise, x, sigmas[i], sigmas[i + 1])
        x = _invert_step(step, iterations)
        progress(phase, i, x, sigmas[i + 1], step.last_denoised)
    return x


def _euler_cfgpp_back(denoise: GuidedDenoiser, y, descending, progress: _Progress, phase: str):
    """Euler CFG++ without churn, as `sample_euler_cfgpp` computes it (bit for bit) but drawing no
    noise: the round trip must not move the host's random stream."""
    x = y
    for i in range(len(descending) - 1):
        sigma, sigma_next = descending[i], descending[i + 1]
        denoised, uncond = denoise(x, sigma)
        x = denoised + (sigma_next / sigma) * (x - uncond)
        progress(phase, i, x, sigma_next, denoised)
    return x


def _round_trip(sampler, model, denoise, y, descending, extra_args, progress: _Progress, phase: str):
    if sampler is None:
        return _euler_cfgpp_back(denoise, y, descending, progress, phase)

    def report(d: dict) -> None:
        progress(phase, int(d["i"]), d["x"], d["sigma"], d.get("denoised"))

    return sampler(model, y, descending, extra_args=extra_args, callback=report, disable=True)


def _errors(back: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖back − x‖ (float64 for float64 latents, else float32)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (back.to(acc) - x.to(acc)).flatten(1).norm(dim=1)


@dataclass(frozen=True)
class InversionResult:
    """What `invert_cfgpp_measured` found.

    latent: the inversion (what `invert_cfgpp` returns). At iterations = 0 the other fields are None
    but model_calls. Otherwise, per sample [B]: plain_error and refined_error, the measured round-trip
    errors ‖sample(candidate) − x‖ of the plain and the refined chain, and refined, True where the
    refined chain was kept (refined_error < plain_error). model_calls counts every call of the model.
    """

    latent: torch.Tensor
    plain_error: torch.Tensor | None
    refined_error: torch.Tensor | None
    refined: torch.Tensor | None
    model_calls: int

    @property
    def error(self) -> torch.Tensor | None:
        """Per-sample round-trip error of the returned latent (None at iterations = 0)."""
        if self.refined is None:
            return None
        return torch.where(self.refined, self.refined_error, self.plain_error)


@torch.no_grad()
def invert_cfgpp_measured(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    iterations: int = 0,
    round_trip=None,
) -> InversionResult:
    """`invert_cfgpp` with what it measured: the round-trip errors per sample and the choice made."""
    sigmas = _check_sigmas(sigmas)
    iterations = _check_iterations(iterations)
    if round_trip is not None and not callable(round_trip):
        raise ValueError(
            f"CFG++ inversion: round_trip must be a sampler function or None; got {round_trip!r}"
        )
    counted = _Counted(model)
    denoise = GuidedDenoiser(counted, x, extra_args, "CFG++ inversion")
    n = max(len(sigmas) - 1, 0)
    progress = _Progress(callback, inversion_progress_steps(n, iterations), disable)
    try:
        plain = _chain(denoise, x, sigmas, 0, progress, PHASES[0])
        if iterations == 0 or n == 0:
            return InversionResult(plain, None, None, None, counted.calls)
        refined = _chain(denoise, x, sigmas, iterations, progress, PHASES[1])
        # the consumer's way back, from each candidate (same model, extra_args and sigmas)
        descending = sigmas.flip(0)
        args = (round_trip, counted, denoise)
        back_plain = _round_trip(*args, plain, descending, denoise.extra_args, progress, PHASES[2])
        back_refined = _round_trip(*args, refined, descending, denoise.extra_args, progress, PHASES[3])
    finally:
        progress.close()
    err_p, err_r = _errors(back_plain, x), _errors(back_refined, x)
    # strictly smaller only: on a tie the paper's inversion stays (the same point, or no measured gain)
    take = (err_r < err_p) | (torch.isfinite(err_r) & ~torch.isfinite(err_p))
    latent = torch.where(_per_sample(take, plain), refined, plain)
    return InversionResult(latent, err_p, err_r, take, counted.calls)


@torch.no_grad()
def invert_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    iterations: int = 0,
    round_trip=None,
) -> torch.Tensor:
    """Invert Euler CFG++ / DDIM CFG++ (η = 0): the latent y at sigmas[-1] that
    `sample_euler_cfgpp(model, y, sigmas.flip(0), extra_args)` takes back to x.

    - `sigmas` ascends from where the clean latent x sits (sigmas[0], may be 0) to the starting sigma.
      A sampling schedule that ends at 0 is passed flipped, 0 included.
    - Same model contract as the samplers: guided x0 with λ = extra_args["cond_scale"], then
      `model.last_denoised_uncond`. Where it is missing (logged once) D_u := D_λ, which makes each step
      the plain-CFG DDIM inversion of the guided model.
    - iterations = 0: the paper's plain inversion, one model call per step, nothing else.
    - iterations = k > 0: the plain chain, and a refined chain (k measured refinements per step,
      safeguarded secant, module docstring); then each is sampled back to σ = sigmas[0] and, per
      sample, the refined latent is returned only where its measured round-trip error is strictly
      smaller than the plain one's. So no sample's round trip is worse than with iterations = 0, on
      any model whose samples do not influence each other. At most (k + 5) model calls per step
      (`inversion_max_model_calls`).
    - round_trip: the sampler the round trip is measured with, in k-diffusion's convention
      `sampler(model, y, sigmas_descending, extra_args=, callback=, disable=)`. None (default):
      Euler CFG++ without churn, computed as `sample_euler_cfgpp` does but drawing no noise; DDIM CFG++
      with η = 0 takes the same update (equal up to rounding). Pass the consumer's sampler where it is
      another one; its model is this model (calls counted, attributes read through), and its own
      callbacks (x and sigma before each of its steps) are passed on as the check phases' progress.
    - Progress: one callback per step of each phase ("invert"; with iterations > 0 also "refine",
      "check plain", "check refined"), `inversion_progress_steps` in all. Keys: x = the new latent,
      sigma = sigma_hat = its sigma, denoised = the guided x0 of the step's last model call, i = the
      step within the phase, phase, step = the running count from 0, steps = the total.
    - Exact round trip only with Euler CFG++ (no churn) and DDIM CFG++ (η = 0) on these sigmas; other
      samplers start from y without a round-trip promise (module docstring).
    """
    return invert_cfgpp_measured(
        model, x, sigmas, extra_args, callback, disable, iterations=iterations, round_trip=round_trip
    ).latent
