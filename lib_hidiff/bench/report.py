"""The bench's outputs: a markdown report, the raw numbers as JSON and a PNG plot."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from .cases import FULL_WIDTH
from .runner import CaseResult, FamilyResult

__all__ = ["COLUMNS", "machine", "markdown_table", "write_outputs"]

COLUMNS = (
    "size",
    "case",
    "phase",
    "median",
    "speed-up",
    "FLOP limit",
    "of limit",
    "full-size FLOP limit",
    "peak memory",
    "memory vs vanilla",
    "peak tensors",
    "tensors vs vanilla",
)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, str]:
    """What the numbers were measured on."""
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": f"{_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load average (1 min) at the end"] = f"{os.getloadavg()[0]:.2f}"
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    try:
        import diffusers
        import hidiffusion  # noqa: F401

        info["diffusers"] = f"{diffusers.__version__}, hidiffusion {metadata.version('hidiffusion')}"
    except Exception:  # the official comparison is optional
        pass
    return info


def _seconds(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(x: float) -> str:
    return f"x{x:.2f}" if math.isfinite(x) else "n/a"


def _mib(b: float) -> str:
    if not math.isfinite(b):
        return "n/a"
    return f"{b / 2**20:.1f} MiB" if b < 10 * 2**20 else f"{b / 2**20:.0f} MiB"


def _div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def row_cells(row: CaseResult, vanilla: CaseResult, native: int) -> list[str]:
    """The table cells of one row (speed-up and limits are vanilla / case: > 1 is faster)."""
    speedup = _div(vanilla.seconds, row.seconds)
    limit = _div(vanilla.flops, row.flops)
    full_limit = _div(vanilla.full_flops, row.full_flops)
    size = f"{row.mult}x ({native * row.mult * 8} px, {row.side}²)"
    return [
        size,
        (f"**{row.label}**" if row.derived else row.label) + ("" if row.finite else " (non-finite output!)"),
        row.phase,
        _seconds(row.seconds),
        _ratio(speedup),
        _ratio(limit),
        f"{100 * speedup / limit:.0f}%" if math.isfinite(speedup / limit) and abs(limit - 1) > 1e-6 else "",
        _ratio(full_limit),
        _mib(row.peak_bytes),
        _ratio(_div(row.peak_bytes, vanilla.peak_bytes)),
        _mib(row.tensor_peak_bytes),
        _ratio(_div(row.tensor_peak_bytes, vanilla.tensor_peak_bytes)),
    ]


def markdown_table(fam: FamilyResult) -> str:
    """The family's results, one row per case and size."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in fam.rows:
        cells = row_cells(row, fam.vanilla(row.mult), fam.cfg.full_native)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _family_section(fam: FamilyResult) -> str:
    cfg = fam.cfg
    o = fam.overhead
    mults = sorted({r.mult for r in fam.rows})
    worst = max((o["seconds"] / fam.vanilla(m).seconds for m in mults), default=math.nan)
    n = {k[2:]: int(v) for k, v in o.items() if k.startswith("n_")}
    parts = [
        f"## {cfg.family}",
        "",
        f"Ran: {cfg.describe()}.",
        "",
        markdown_table(fam),
        "",
        f"- Installed but disabled: the 'disabled' rows time it directly (as noisy as any row). What it can "
        f"cost at most: {n['pre_hooks'] + n['pre_hooks_kwargs']} pre-hooks, {n['forward_hooks']} forward hooks "
        f"and {n['wrapped_forwards']} wrapped forwards run per UNet call, each returning at once; priced with "
        f"timeit on a stand-in module that is {1e6 * o['seconds']:.0f} µs per forward, "
        f"{100 * worst:.3f}% of vanilla at the smallest size above.",
        f"- Peak memory: {fam.memory_note}. Peak tensors: the most bytes of tensor storage made by the "
        "forward and alive at once (every aten op's outputs tracked until freed; exact and repeatable, "
        "kernels' private workspaces not included).",
    ]
    if cfg.width != FULL_WIDTH or cfg.scaled:
        parts.append(
            "- 'full-size FLOP limit' counts the same cases on the full-size model (width 320, native "
            f"{cfg.full_native}², the family's heads) at the full-size latents, on the meta device."
        )
    parts += [f"- {n}" for n in fam.notes]
    return "\n".join(parts)


def report_markdown(families: list[FamilyResult], command: str, settings: dict[str, object]) -> str:
    info = machine(families[0].cfg.device if families else "cpu")
    head = [
        "# HiDiffusion UNet benchmark",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M %Z')})",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
        "",
        "How to read: one UNet forward (batch 2, as with CFG), median of the timed repeats. 'speed-up' and "
        "'FLOP limit' are vanilla / case (> 1: faster, fewer FLOPs); 'of limit' is speed-up / FLOP limit. "
        "FLOPs: 2 per multiply-add of every Conv2d, Linear and attention product (q·kᵀ, attn·v) the forward "
        "actually ran. HiDiffusion phases are the runs of steps doing the same parts (RAD: stride-4 "
        "downsample + x4 upsample, CA: extra pool/unpool, MSW: windowed self-attention); the bold rows weigh "
        "the phases by their steps: the mean cost of one step over a whole generation. 'official' is the "
        "hidiffusion package on a diffusers UNet holding the same weights; its speed-up is also against the "
        "ldm vanilla.",
    ]
    return "\n".join(head) + "\n\n" + "\n\n".join(_family_section(f) for f in families) + "\n"


_LINES = {  # cases drawn as lines across the sizes
    "vanilla": {"color": "black", "linewidth": 2},
    "disabled": {"color": "gray", "linestyle": "--"},
    "diffusers": {"color": "tab:brown", "linestyle": ":"},
    "hidiff:mean": {"color": "tab:blue", "linewidth": 2.5},
    "official:mean": {"color": "tab:orange", "linewidth": 2.5},
}
_MARKERS = {"pass-through": "x", "MSW": "s", "CA": "^", "RAD": "v"}


def _style(key: str) -> dict[str, object]:
    """Lines for vanilla/disabled/means; phases as unconnected markers (a phase exists at some sizes only)."""
    if key in _LINES:
        return {"marker": "o", **_LINES[key]}
    impl, _, parts = key.partition(":")
    marker = next((m for name, m in _MARKERS.items() if parts.startswith(name)), "d")
    return {
        "marker": marker,
        "linestyle": "none",
        "markersize": 7,
        "color": "tab:blue" if impl == "hidiff" else "tab:orange",
    }


def plot(families: list[FamilyResult], path: Path) -> None:
    """Time and peak memory against image size, per case, one row of panels per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(families), 2, figsize=(13, 4.6 * len(families)), squeeze=False)
    for fam, (ax_t, ax_m) in zip(families, axes):
        # CUDA's peak allocated is exact; on a CPU the tensor peak is (RSS moves with allocator slack).
        cuda = fam.cfg.device.startswith("cuda")
        memory = "peak_bytes" if cuda else "tensor_peak_bytes"
        mem_label = "CUDA peak allocated" if cuda else "peak live tensors"
        for key in dict.fromkeys(r.key for r in fam.rows):
            rows = sorted((r for r in fam.rows if r.key == key), key=lambda r: r.mult)
            xs = [r.mult for r in rows]
            style = _style(key)
            ax_t.plot(xs, [r.seconds for r in rows], label=rows[-1].label, **style)
            ax_m.plot(xs, [getattr(r, memory) / 2**20 for r in rows], label=rows[-1].label, **style)
        sides = sorted({r.mult for r in fam.rows})
        cfg = fam.cfg
        run = f"width {cfg.width}, native latent {cfg.native}², {str(cfg.dtype).replace('torch.', '')} on {cfg.device}"
        for ax, what in (
            (ax_t, "seconds per UNet forward (median)"),
            (ax_m, f"{mem_label} of the forward (MiB)"),
        ):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sides, [f"{m}x native\n({cfg.full_native * m * 8} px full size)" for m in sides])
            ax.set_xlim(sides[0] / 1.3, sides[-1] * 1.3)
            ax.set_ylabel(what)
            ax.set_title(f"{cfg.family}: {run}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    families: list[FamilyResult], out: Path, command: str, settings: dict[str, object]
) -> dict[str, Path]:
    """results.md, results.json and bench.png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "plot": out / "bench.png"}
    paths["markdown"].write_text(report_markdown(families, command, settings), encoding="utf-8")
    data = {
        "command": command,
        "settings": {k: str(v) for k, v in settings.items()},
        "machine": machine(families[0].cfg.device if families else "cpu"),
        "families": [
            {
                "config": {k: str(v) for k, v in dataclasses.asdict(f.cfg).items()},
                "describe": f.cfg.describe(),
                "notes": f.notes,
                "memory": f.memory_note,
                "disabled_overhead": f.overhead,
                "rows": [dataclasses.asdict(r) for r in f.rows],
            }
            for f in families
        ],
    }
    paths["json"].write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    plot(families, paths["plot"])
    return paths
