"""Where the newest diffusers release lives for the tests, and how a test runs code on it.

.ci/run installs the release pinned in requirements-test-diffusers-newest.txt (and what it needs to
import next to the venv's torch) with ``--target`` into .ci-diffusers-newest/; the venv keeps
diffusers 0.27.2, which the official hidiffusion oracle needs. Tests run on the newest release in a
subprocess with that folder first on PYTHONPATH (tests/unet/test_cross_backend.py,
tests/diffusers/test_newest_release.py). Missing folder: a skip, or a failure where
HIDIFF_REQUIRE_NEWEST_DIFFUSERS=1 (as .ci/run sets), so CI can never skip them.
"""

from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEWEST_DIR = os.path.join(ROOT, ".ci-diffusers-newest")
NEWEST_REQUIREMENTS = os.path.join(ROOT, "requirements-test-diffusers-newest.txt")


def newest_version() -> str:
    """The diffusers version pinned in requirements-test-diffusers-newest.txt."""
    with open(NEWEST_REQUIREMENTS, encoding="utf-8") as f:
        found = re.search(r"^diffusers==(\S+)", f.read(), re.M)
    assert found, f"{NEWEST_REQUIREMENTS} pins no diffusers version"
    return found.group(1)


def require_installed() -> None:
    """Skip (or fail, under HIDIFF_REQUIRE_NEWEST_DIFFUSERS=1) when the newest release is not installed."""
    if os.path.isdir(os.path.join(NEWEST_DIR, "diffusers")):
        return
    message = (
        f"diffusers {newest_version()} is not installed in {NEWEST_DIR} (.ci/run installs it: "
        f"pip install --no-deps --target .ci-diffusers-newest -r requirements-test-diffusers-newest.txt)"
    )
    if os.environ.get("HIDIFF_REQUIRE_NEWEST_DIFFUSERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def environment() -> dict[str, str]:
    """This process's environment with the newest release first on PYTHONPATH, then the repository."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([NEWEST_DIR, ROOT])}


def imported_from_newest(module_file: str) -> bool:
    return os.path.realpath(module_file).startswith(os.path.realpath(NEWEST_DIR) + os.sep)
