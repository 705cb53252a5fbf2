"""The diffusers-layer suite (this folder) also passes on the newest diffusers release.

The venv holds diffusers 0.27.2 (the official hidiffusion oracle needs it), so everything else here
runs on that. This test runs the whole folder again in a subprocess on the release pinned in
requirements-test-diffusers-newest.txt (tests/newest_diffusers.py), so a diffusers release that
changes what the CFG++ schedulers, the scheduler clock or hidiffusion(pipe) rely on fails CI when
that file is bumped. Every test that ran in this session from this folder must pass there too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .. import newest_diffusers as newest
from .on_release import INNER

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(os.environ.get(INNER) == "1", reason="already the run on the newest release")
def test_diffusers_suite_passes_on_the_newest_release(request):
    newest.require_installed()
    want = newest.newest_version()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.diffusers.on_release"],
        cwd=newest.ROOT,
        env=newest.environment(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    result = json.loads(lines[-1])
    print(
        f"tests/diffusers on diffusers {result['diffusers']} (transformers {result['transformers']}): "
        f"{len(result['passed'])} passed, {len(result['failed'])} failed, {len(result['skipped'])} skipped"
    )
    assert result["diffusers"] == want, f"the subprocess imported diffusers {result['diffusers']}, not {want}"
    assert newest.imported_from_newest(result["diffusers_file"]), result["diffusers_file"]
    assert proc.returncode == 0 and not result["failed"], "\n".join(
        [f"failed on diffusers {want}: {', '.join(result['failed'])}", proc.stdout[-6000:]]
    )
    assert result["passed"], "no test ran on the newest release"
    # What ran here on the pinned diffusers (all of it in a whole-suite run) must also pass there.
    here = {
        item.nodeid
        for item in request.session.items
        if item is not request.node and str(item.path).startswith(HERE + os.sep)
    }
    missing = sorted(here - set(result["passed"]))
    assert not missing, f"passed on the pinned diffusers but not on {want}: {missing}"
