"""ldm and diffusers UNets holding the same weights give the same HiDiffusion output.

On the venv's diffusers (0.27.2, the oracle's) in-process, and on the newest diffusers release,
installed by .ci/run into its own folder (the official package cannot import there), in a subprocess
with that folder first on PYTHONPATH. The whole oracle grid also checks both backends against each
other (tests/unet/test_oracle.py).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from .cross_backend import CASES, QUICK, ROOT, measure

TOL = 1e-5  # relative
NEWEST_DIR = os.path.join(ROOT, ".ci-diffusers-newest")
NEWEST_REQUIREMENTS = os.path.join(ROOT, "requirements-test-diffusers-newest.txt")


def _newest_version() -> str:
    with open(NEWEST_REQUIREMENTS, encoding="utf-8") as f:
        found = re.search(r"^diffusers==(\S+)", f.read(), re.M)
    assert found, f"{NEWEST_REQUIREMENTS} pins no diffusers version"
    return found.group(1)


def test_same_output_on_the_installed_diffusers():
    result = measure(QUICK)
    print(
        f"ldm vs diffusers {result['diffusers']}: max rel {result['max_rel']:.1e}, abs {result['max_abs']:.1e}"
    )
    assert result["cases"] and result["max_rel"] <= TOL


def test_same_output_on_the_newest_diffusers():
    want = _newest_version()
    if not os.path.isdir(os.path.join(NEWEST_DIR, "diffusers")):
        message = (
            f"diffusers {want} is not installed in {NEWEST_DIR} (.ci/run installs it: "
            f"pip install --no-deps --target .ci-diffusers-newest -r requirements-test-diffusers-newest.txt)"
        )
        if os.environ.get("HIDIFF_REQUIRE_NEWEST_DIFFUSERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([NEWEST_DIR, ROOT])}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unet.cross_backend"],
        cwd=ROOT,
        env=env,
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
    assert os.path.realpath(result["diffusers_file"]).startswith(os.path.realpath(NEWEST_DIR))
    assert len(result["cases"]) == sum(len(steps) for _, _, steps, _ in CASES) and result["max_rel"] <= TOL, (
        result
    )
