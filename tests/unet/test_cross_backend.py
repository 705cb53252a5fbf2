"""ldm and diffusers UNets holding the same weights give the same HiDiffusion output.

On the venv's diffusers (0.27.2, the oracle's) in-process, and on the newest diffusers release,
installed by .ci/run into its own folder (the official package cannot import there), in a subprocess
with that folder first on PYTHONPATH. The whole oracle grid also checks both backends against each
other (tests/unet/test_oracle.py).
"""

import json
import subprocess
import sys

from .. import newest_diffusers as newest
from .cross_backend import CASES, QUICK, ROOT, measure

TOL = 1e-5  # relative


def test_same_output_on_the_installed_diffusers():
    result = measure(QUICK)
    print(
        f"ldm vs diffusers {result['diffusers']}: max rel {result['max_rel']:.1e}, abs {result['max_abs']:.1e}"
    )
    assert result["cases"] and result["max_rel"] <= TOL


def test_same_output_on_the_newest_diffusers():
    newest.require_installed()
    want = newest.newest_version()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unet.cross_backend"],
        cwd=ROOT,
        env=newest.environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"ldm vs diffusers {result['diffusers']}: max rel {result['max_rel']:.1e}, abs {result['max_abs']:.1e}"
    )
    assert result["diffusers"] == want, f"the subprocess imported diffusers {result['diffusers']}, not {want}"
    assert newest.imported_from_newest(result["diffusers_file"]), result["diffusers_file"]
    assert len(result["cases"]) == sum(len(steps) for _, _, steps, _ in CASES) and result["max_rel"] <= TOL, (
        result
    )
