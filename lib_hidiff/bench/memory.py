"""Peak memory of one forward: CUDA peak allocated on a GPU, peak resident set growth on a CPU.

On a CPU there is no allocator to ask, so the process's resident set is used, measured so that a
case pays only for itself:

1. ``gc.collect(1)`` and glibc ``malloc_trim(0)`` hand memory freed by earlier cases back to the
   kernel, so it cannot hide the next forward's allocations (glibc otherwise keeps freed heap
   pages resident and reuses them without the RSS moving);
2. writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark (VmHWM) to the
   current RSS (Linux >= 4.0);
3. after the forward, ``VmHWM - RSS before`` is the extra resident memory at the forward's peak:
   activations, kernel workspaces and the output -- not the weights or the inputs, which are
   resident before. It moves by a few MiB from forward to forward: the median of three is kept.

Where any step is unavailable (not Linux, no ``/proc``), the probe reports NaN and says why.

The resident set also holds allocator slack and fragmentation, which move by a few MiB from run to
run. :class:`TensorPeak` gives the exact, repeatable counterpart on any device: the most bytes of
tensor storage created during the forward and alive at once -- what CUDA's "allocated" counts,
without the kernels' private workspaces.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["MemoryProbe", "TensorPeak", "probe_for"]

MiB = 1024 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


class MemoryProbe:
    """Measure the peak extra memory of ``fn()`` in bytes (NaN when this platform cannot say)."""

    kind = "none"
    note = "peak memory not measured"
    rounds = 1  # forwards measured per case; the median is reported

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        return fn(), math.nan


class CudaPeak(MemoryProbe):
    kind = "cuda"
    note = "CUDA peak allocated during the forward, minus what was allocated before it (weights, inputs)"

    def __init__(self, device: torch.device):
        self.device = device

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        gc.collect(1)  # young garbage only: a full pass over a process with diffusers loaded takes ~0.2 s
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        out = fn()
        torch.cuda.synchronize(self.device)
        return out, float(torch.cuda.max_memory_allocated(self.device) - before)


class RssPeak(MemoryProbe):
    kind = "rss"
    rounds = 3
    note = (
        "peak resident set growth during the forward, median of 3 forwards (glibc malloc_trim, then "
        "VmHWM reset via /proc/self/clear_refs; VmHWM after minus VmRSS before)"
    )

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._trim = getattr(libc, "malloc_trim", None)
        # Fail here, not in the middle of a run, if the kernel interface is missing.
        self._reset_hwm()
        _status_kib("VmHWM")

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        gc.collect(1)  # young garbage only: a full pass over a process with diffusers loaded takes ~0.2 s
        if self._trim is not None:
            self._trim(0)
        before = _status_kib("VmRSS")
        self._reset_hwm()
        out = fn()
        peak = max(_status_kib("VmHWM"), _status_kib("VmRSS"))
        return out, float(peak - before) * 1024


def probe_for(device: torch.device) -> MemoryProbe:
    """The best probe for a device; a NaN-reporting probe (with a reason) where none works."""
    if device.type == "cuda":
        return CudaPeak(device)
    if device.type == "cpu":
        try:
            return RssPeak()
        except OSError as e:
            probe = MemoryProbe()
            probe.note = f"peak RSS not available here ({e})"
            return probe
    return MemoryProbe()


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    return [t.untyped_storage() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class TensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the block and alive at the same time.

    Every aten op's outputs are seen here; a storage counts from the op that created it until its
    last reference goes (polled before the next op's outputs are added, so freed memory is never
    counted twice). Views and in-place results share an input's storage and add nothing; weights
    and inputs made before the block are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _collect(self) -> None:
        for ptr in [p for p, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(ptr)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._collect()
        inputs = {st.data_ptr() for st in _storages((args, kwargs))}
        for st in _storages(out):
            ptr = st.data_ptr()
            if ptr and ptr not in inputs and ptr not in self.live and st.device.type != "meta":
                self.live[ptr] = (StorageWeakRef(st), st.nbytes())
                self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        return out
