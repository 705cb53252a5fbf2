"""``python -m lib_hidiff.bench``: speed, memory and FLOPs of the UNet with and without HiDiffusion."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch

from .cases import FULL_WIDTH, BenchConfig, official_available
from .report import write_outputs
from .runner import run_family

FAMILIES = ("sd1", "sd2", "sdxl")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Defaults per device; --quick overrides what the user did not set.
DEFAULTS = {
    "cuda": {
        "family": "sd1,sdxl",
        "width": FULL_WIDTH,
        "side_scale": 1.0,
        "sizes": "1,2,4",
        "dtype": "float16",
        "repeats": 5,
        "warmup": 2,
    },
    "cpu": {
        "family": "sd1",
        "width": 64,
        "side_scale": 0.5,
        "sizes": "1,2",
        "dtype": "float32",
        "repeats": 3,
        "warmup": 1,
    },
}
QUICK = {
    "cuda": {"family": "sd1", "sizes": "1,2", "repeats": 3, "warmup": 1},
    "cpu": {"family": "sd1", "width": 32, "side_scale": 0.25, "sizes": "1,2", "repeats": 2, "warmup": 1},
}


class BenchError(ValueError):
    """A command-line value out of range (one line, naming the option and what is allowed)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other bad value
        self.exit(2, f"bench: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m lib_hidiff.bench",
        description="Time the UNet forward (batch 2) with and without HiDiffusion on real ldm UNets with random "
        "weights: vanilla, installed-but-disabled, each HiDiffusion phase, and the official hidiffusion package "
        "on a diffusers twin. Writes results.md, results.json and bench.png.",
    )
    p.add_argument("--family", help="comma-separated layouts: sd1, sd2, sdxl (GPU default sd1,sdxl; CPU sd1)")
    p.add_argument(
        "--width",
        type=int,
        help=f"model channels, a multiple of 32 ({FULL_WIDTH} = full size; CPU default 64)",
    )
    p.add_argument(
        "--side-scale",
        type=float,
        help="native latent side as a fraction of the family's (CPU default 0.5: 32² for SD 1.5); "
        "each size keeps the schedule of its full-size image",
    )
    p.add_argument(
        "--sizes", help="comma-separated multiples of the native side (GPU default 1,2,4; CPU 1,2)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="GPU default float16, CPU float32")
    p.add_argument("--repeats", type=int, help="timed forwards per case (GPU default 5, CPU 3)")
    p.add_argument("--warmup", type=int, help="untimed rounds before measuring (GPU default 2, CPU 1)")
    p.add_argument(
        "--steps", type=int, default=50, help="sampling steps the schedule is planned for (default 50)"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 when the CPUs are already busy)",
    )
    p.add_argument("--no-official", action="store_true", help="skip the official hidiffusion package")
    p.add_argument("--no-full-flops", action="store_true", help="skip counting the full-size model's FLOPs")
    p.add_argument("--quick", action="store_true", help="a one-minute CPU run (smallest sizes, few repeats)")
    p.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    return p


def _ints(name: str, text: str, low: int, high: int) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not low <= v <= high for v in values):
        raise BenchError(f"--{name} must be comma-separated integers in {low}..{high}, got {text!r}")
    return sorted(set(values))


def _busy_cpu_threads() -> tuple[int | None, str]:
    """One thread when other work already keeps every CPU busy: OpenMP threads that wait for a
    descheduled sibling make a multi-threaded forward several times slower and very noisy."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if cpus > 1 and load >= cpus - 0.5:
        return 1, f"machine busy: 1-minute load {load:.1f} on {cpus} CPUs"
    return None, ""


def resolve(args: argparse.Namespace) -> tuple[list[BenchConfig], list[int], dict[str, object]]:
    """Fill device defaults, validate, and build one BenchConfig per family."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = device.split(":")[0]
    if kind not in DEFAULTS:
        raise BenchError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available to torch here; use --device cpu")
    values = dict(DEFAULTS[kind])
    if args.quick:
        values.update(QUICK[kind])
    for name in ("family", "width", "side_scale", "sizes", "dtype", "repeats", "warmup"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    families = [f.strip() for f in str(values["family"]).split(",") if f.strip()]
    if not families or any(f not in FAMILIES for f in families):
        raise BenchError(
            f"--family must be comma-separated names from {list(FAMILIES)}, got {values['family']!r}"
        )
    width = int(values["width"])
    if width < 32 or width % 32:
        raise BenchError(
            f"--width must be a multiple of 32 from 32 up (GroupNorm uses 32 groups), got {width}"
        )
    scale = float(values["side_scale"])
    if not 0.0 < scale <= 1.0:
        raise BenchError(f"--side-scale must be in (0, 1], got {scale}")
    sizes = _ints("sizes", values["sizes"], 1, 8)
    for name, low in (("repeats", 1), ("warmup", 0)):
        if not 0 <= int(values[name]) - low <= 100:
            raise BenchError(f"--{name} must be an integer in {low}..{100 + low}, got {values[name]}")
    if not 1 <= args.steps <= 1000:
        raise BenchError(f"--steps must be an integer in 1..1000, got {args.steps}")
    threads, why = args.threads, "--threads"
    if threads is not None and not 1 <= threads <= 1024:
        raise BenchError(f"--threads must be an integer in 1..1024, got {threads}")
    if threads is None and kind == "cpu":
        threads, why = _busy_cpu_threads()
    dtype = DTYPES[str(values["dtype"])]
    if kind == "cpu" and dtype != torch.float32:
        raise BenchError(
            f"--dtype {values['dtype']} on CPU: use float32 (half kernels are not what a CPU WebUI runs)"
        )
    configs = [
        BenchConfig(f, width, scale, None, device, dtype, 2, args.steps, not args.no_official)
        for f in families
    ]
    settings = {
        "repeats": int(values["repeats"]),
        "warmup": int(values["warmup"]),
        "sizes": ",".join(map(str, sizes)),
        "steps": args.steps,
        "official": "no" if args.no_official else (official_available() or "yes"),
        "threads": f"{threads} ({why})" if threads else f"{torch.get_num_threads()} (torch default)",
        "load average (1 min) at the start": f"{os.getloadavg()[0]:.2f}"
        if hasattr(os, "getloadavg")
        else "n/a",
    }
    if threads:
        torch.set_num_threads(threads)
    return configs, sizes, settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    threads_before = torch.get_num_threads()
    try:
        configs, sizes, settings = resolve(args)
    except BenchError as e:
        torch.set_num_threads(threads_before)
        print(f"bench: {e}", file=sys.stderr)
        return 2
    command = "python -m lib_hidiff.bench " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    def log(line: str) -> None:
        print(line, flush=True)

    start = time.perf_counter()
    try:
        results = [
            run_family(
                cfg, sizes, int(settings["repeats"]), int(settings["warmup"]), log, not args.no_full_flops
            )
            for cfg in configs
        ]
        paths = write_outputs(results, Path(args.out), command.strip(), settings)
    finally:
        torch.set_num_threads(threads_before)  # --threads holds for this run only
    print(paths["markdown"].read_text(encoding="utf-8"))
    log(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
