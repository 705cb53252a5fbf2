"""Benchmark of HiDiffusion on real ldm UNets with random weights: ``python -m lib_hidiff.bench``.

* :mod:`.cases` -- the models and the timed configurations (vanilla, disabled, each HiDiffusion
  phase, the official package on a diffusers twin);
* :mod:`.flops` -- FLOPs counted from the shapes a forward actually ran with;
* :mod:`.memory` -- peak memory of one forward (CUDA allocator, or resident set growth on a CPU)
  and the exact peak of live tensor storage;
* :mod:`.overhead` -- the cost of installed-but-disabled patches, counted and priced;
* :mod:`.runner` -- warm-up, measuring round, interleaved timed repeats, 50-step means;
* :mod:`.report` -- markdown, JSON and the PNG plot.

Not used by the WebUI glue; needs the test dependencies (ldm, and diffusers + hidiffusion for the
official comparison).
"""

from .flops import FlopCount, attention_flops, count_flops

__all__ = ["FlopCount", "attention_flops", "count_flops"]
