"""Run the cases: warm-up, one measured forward (peak memory + FLOPs), then interleaved timed repeats.

Timed repeats go round all cases of a size in turn, starting one case later each round, so a
machine shared with other work slows every case alike instead of whichever ran during a burst.
Ratios are taken against ``vanilla`` of the same size in the same run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_hidiff import zoo

from .cases import FULL_WIDTH, BenchConfig, Case, build_models, full_size, make_cases
from .flops import count_flops
from .memory import TensorPeak, probe_for
from .overhead import disabled_cost

__all__ = ["CaseResult", "FamilyResult", "run_family"]

Log = Callable[[str], None]


@dataclass
class CaseResult:
    """One case at one size; ``derived`` rows (50-step means) are computed from the phase rows."""

    family: str
    mult: int
    side: int  # latent side that ran
    key: str
    label: str
    impl: str
    phase: str
    weight: int
    times: list[float] = field(default_factory=list)
    seconds: float = math.nan  # median of ``times`` (weighted mean for derived rows)
    flops: float = math.nan
    attention_flops: float = math.nan
    peak_bytes: float = math.nan  # CUDA peak allocated, or peak RSS growth on a CPU (memory.probe_for)
    tensor_peak_bytes: float = math.nan  # peak of live tensor storage (memory.TensorPeak)
    full_flops: float = math.nan  # the same case on the full-size model (meta device)
    derived: bool = False
    # The measured forward's output had no inf/NaN (random weights in half precision can overflow).
    finite: bool = True


@dataclass
class FamilyResult:
    cfg: BenchConfig
    rows: list[CaseResult]
    notes: list[str]
    memory_note: str
    overhead: dict[str, float]  # the gated-off patches' Python cost per forward (overhead.disabled_cost)

    def vanilla(self, mult: int) -> CaseResult:
        return next(r for r in self.rows if r.mult == mult and r.key == "vanilla")


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _timed(case: Case, sync: Callable[[], None]) -> float:
    case.enter()
    try:
        sync()
        start = time.perf_counter()
        out = case.forward()
        sync()
        elapsed = time.perf_counter() - start
        del out
    finally:
        case.exit()
    return elapsed


def _fmt_bytes(b: float) -> str:
    return "n/a" if not math.isfinite(b) else f"{b / 2**20:.1f} MiB"


def run_cases(
    cases: list[Case], cfg: BenchConfig, mult: int, repeats: int, warmup: int, log: Log
) -> list[CaseResult]:
    """Warm-up rounds, measuring rounds (FLOPs, memory; progress line per case), timed rounds."""
    sync = _sync(cfg.device)
    probe = probe_for(torch.device(cfg.device))
    side = cfg.native * mult
    rows = [CaseResult(cfg.family, mult, side, c.key, c.label, c.impl, c.phase, c.weight) for c in cases]
    tag = f"{cfg.family} {mult}x ({side}x{side} latent)"
    for _ in range(warmup):
        for case in cases:
            _timed(case, sync)
    vanilla_flops = math.nan
    samples: list[list[float]] = [[] for _ in cases]
    for case, row, mem in zip(cases, rows, samples):
        case.enter()
        try:
            with count_flops() as fc, TensorPeak() as tensors:
                start = time.perf_counter()
                out, peak = probe.measure(case.forward)
                sync()
                first = time.perf_counter() - start
            mem.append(peak)
            row.tensor_peak_bytes = float(tensors.peak)
            row.finite = bool(torch.isfinite(out).all())
            del out
        finally:
            case.exit()
        row.flops, row.attention_flops = float(fc.total), float(fc.attention)
        if fc.attention == 0:
            raise RuntimeError(
                f"bench: no SDPA call counted in {case.label}: the attention kernel is not SDPA"
            )
        if case.key == "vanilla":
            vanilla_flops = row.flops
        log(
            f"  [{tag}] {case.label:<28} {case.phase:<20} measured: {first:7.3f} s, peak {_fmt_bytes(peak)} "
            f"(tensors {_fmt_bytes(row.tensor_peak_bytes)}), "
            f"{row.flops / 1e9:.1f} GFLOP (limit x{vanilla_flops / row.flops:.2f})"
            + ("" if row.finite else "  WARNING: non-finite output")
        )
    for _ in range(probe.rounds - 1):  # further memory samples where one is noisy (CPU resident set)
        for case, mem in zip(cases, samples):
            case.enter()
            try:
                out, peak = probe.measure(case.forward)
                mem.append(peak)
                del out
            finally:
                case.exit()
    for row, mem in zip(rows, samples):
        row.peak_bytes = statistics.median(mem)
    for r in range(repeats):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        for case in order:
            rows[cases.index(case)].times.append(_timed(case, sync))
        log(f"  [{tag}] timed round {r + 1}/{repeats} done")
    for row in rows:
        row.seconds = statistics.median(row.times) if row.times else math.nan
    return rows


def generation_means(rows: list[CaseResult], steps: int) -> list[CaseResult]:
    """Per implementation, the mean time of one step over a whole generation (phases weighted by steps)."""
    out = []
    for impl, prefix, label in (("ldm", "hidiff:", "HiDiffusion"), ("diffusers", "official:", "official")):
        phase_rows = [r for r in rows if r.key.startswith(prefix)]
        if not phase_rows or sum(r.weight for r in phase_rows) != steps:
            continue
        first = phase_rows[0]

        def mean(attr: str, rows: list[CaseResult] = phase_rows) -> float:
            return sum(r.weight * getattr(r, attr) for r in rows) / steps

        out.append(
            CaseResult(
                first.family,
                first.mult,
                first.side,
                f"{prefix}mean",
                f"{label}, {steps}-step mean",
                impl,
                f"all {steps} steps",
                steps,
                [],
                mean("seconds"),
                mean("flops"),
                mean("attention_flops"),
                max(r.peak_bytes for r in phase_rows),
                max(r.tensor_peak_bytes for r in phase_rows),
                mean("full_flops"),
                derived=True,
            )
        )
    return out


def count_full_size(cfg: BenchConfig, mults: list[int], log: Log) -> dict[tuple[int, str], float]:
    """FLOPs of every case on the full-size model at the full-size latents (meta device: no compute)."""
    full = build_models(full_size(cfg))
    found: dict[tuple[int, str], float] = {}
    with torch.inference_mode(), zoo.sdpa_attention():
        for mult in mults:
            cases, _ = make_cases(full, mult)
            for case in cases:
                case.enter()
                try:
                    with count_flops() as fc:
                        case.forward()
                finally:
                    case.exit()
                found[(mult, case.key)] = float(fc.total)
    log(
        f"  [{cfg.family}] full-size FLOPs counted on the meta device (width {FULL_WIDTH}, native {full.cfg.native})"
    )
    full.release()
    return found


def run_family(
    cfg: BenchConfig, mults: list[int], repeats: int, warmup: int, log: Log, full_flops: bool = True
) -> FamilyResult:
    """Everything for one family: builds the models, runs every size, adds 50-step means."""
    full: dict[tuple[int, str], float] = {}
    if full_flops and (cfg.width != FULL_WIDTH or cfg.scaled):
        # First: the official package keeps one size hook per process that works (see ModelSet.release).
        full = count_full_size(cfg, mults, log)
    log(f"[{cfg.family}] building models: {cfg.describe()}")
    ms = build_models(cfg)
    notes = [] if ms.official_note is None else [ms.official_note]
    rows: list[CaseResult] = []
    with torch.inference_mode(), zoo.sdpa_attention():
        for mult in mults:
            cases, case_notes = make_cases(ms, mult)
            notes += [n for n in case_notes if n not in notes]
            log(
                f"[{cfg.family}] {mult}x native: {len(cases)} cases, {warmup} warm-up + 1 measuring + {repeats} timed rounds"
            )
            size_rows = run_cases(cases, cfg, mult, repeats, warmup, log)
            for row in size_rows:
                row.full_flops = full.get((mult, row.key), row.flops if not full else math.nan)
            rows += size_rows + generation_means(size_rows, cfg.steps)
    overhead = disabled_cost(ms.unet, ms.layout)
    log(
        f"  [{cfg.family}] gated-off patches: {overhead['seconds'] * 1e6:.0f} us per forward "
        f"(upper bound from {sum(v for k, v in overhead.items() if k.startswith('n_')):.0f} hooks/wrappers priced with timeit)"
    )
    ms.release()
    return FamilyResult(cfg, rows, notes, probe_for(torch.device(cfg.device)).note, overhead)
