"""Runs tests/diffusers on whichever diffusers this interpreter imports; prints one JSON line.

``python -m tests.diffusers.on_release`` with the newest release first on PYTHONPATH is how
tests/diffusers/test_newest_release.py runs the whole diffusers-layer suite there (the venv keeps
diffusers 0.27.2 for the official hidiffusion oracle). The last line of stdout is
``{"diffusers": version, "diffusers_file": ..., "transformers": version, "exit": pytest's exit code,
"passed": [node ids], "failed": [node ids], "skipped": [node ids]}``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# Set in the run this module starts, so that test_newest_release.py does not start another.
INNER = "HIDIFF_DIFFUSERS_SUITE_ON_RELEASE"


class _Outcomes:
    def __init__(self) -> None:
        self.by_outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}

    def pytest_runtest_logreport(self, report) -> None:
        # one entry per test: its call, or the setup/teardown phase that did not pass
        if report.when == "call" or report.outcome != "passed":
            self.by_outcome[report.outcome].append(report.nodeid)


def main() -> int:
    import diffusers
    import transformers

    os.environ[INNER] = "1"
    outcomes = _Outcomes()
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", HERE, "--ignore", os.path.join(HERE, "test_newest_release.py")],
        plugins=[outcomes],
    )
    print(
        json.dumps(
            {
                "diffusers": diffusers.__version__,
                "diffusers_file": diffusers.__file__,
                "transformers": transformers.__version__,
                "exit": int(code),
                **outcomes.by_outcome,
            }
        )
    )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
