"""The CFG++ guidance scale λ: mapping from a UI's CFG value, and its plain-CFG equivalent per step.

CFG++ with λ takes exactly the same step as plain CFG with a step-dependent scale
w_n = λ σ_n / (σ_n − σ_{n+1}) (VE sigmas; for DDIM σ_t = √((1 − ᾱ_t) / ᾱ_t)). So the same λ guides
harder with more steps, or with schedules that pack small steps together; λ is not comparable
across step counts the way CFG is.
"""

from __future__ import annotations

import math

import torch

SCALE_MODES = ("cfg/12.5", "raw")
"""How a UI's CFG value becomes λ.

"cfg/12.5": λ = CFG / 12.5, the WebUI 1.10 built-in "DDIM CFG++" convention (CFG 7 → λ 0.56).
"raw": λ = CFG, the ComfyUI / reForge convention (typical values 0.5 to 2).
"""

WEBUI_DIVISOR = 12.5


def _check_mode(mode: str) -> str:
    if mode not in SCALE_MODES:
        allowed = ", ".join(repr(m) for m in SCALE_MODES)
        raise ValueError(f"CFG++ scale mode must be one of {allowed}; got {mode!r}")
    return mode


def _finite_non_negative(value: float, setting: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{setting} must be a finite number >= 0; got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{setting} must be a finite number >= 0; got {value!r}")
    return number


def lambda_from_cfg(cfg_scale: float, mode: str = "cfg/12.5") -> float:
    """λ for the CFG++ samplers from the UI's CFG scale, by scale mode (see SCALE_MODES)."""
    _check_mode(mode)
    cfg = _finite_non_negative(cfg_scale, "CFG scale (for CFG++)")
    return cfg / WEBUI_DIVISOR if mode == "cfg/12.5" else cfg


def cfg_from_lambda(lam: float, mode: str = "cfg/12.5") -> float:
    """The UI CFG value that gives λ in a scale mode (inverse of lambda_from_cfg)."""
    _check_mode(mode)
    value = _finite_non_negative(lam, "CFG++ scale λ")
    return value * WEBUI_DIVISOR if mode == "cfg/12.5" else value


def equivalent_cfg_scales(sigmas: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-step plain-CFG scale w_n = λ σ_n / (σ_n − σ_{n+1}) that reproduces a CFG++ step exactly.

    `sigmas` is a sampler's schedule (descending; it may end at 0, where w = λ). Returns float64 of
    length len(sigmas) - 1.
    """
    s = torch.as_tensor(sigmas).detach().to(device="cpu", dtype=torch.float64).flatten()
    if s.numel() < 2:
        raise ValueError(f"sigmas must hold at least 2 values (one step); got {s.numel()}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("sigmas must be finite and >= 0")
    if not bool((s[:-1] > s[1:]).all()):
        raise ValueError("sigmas must be strictly decreasing for an equivalent CFG scale")
    return _finite_non_negative(lam, "CFG++ scale λ") * s[:-1] / (s[:-1] - s[1:])
