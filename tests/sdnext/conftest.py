"""Fixtures for the SD.Next glue tests: a fake SD.Next (tests/sdnext/fake_sdnext) and tiny real pipelines.

The fake's top-level ``modules`` and ``gradio`` packages are swapped in by tests/fakehost.py, so the
A1111 fake (tests/webui), the Forge fake and this one run in one pytest session: this conftest
activates the fake at collection (before the test modules import ``modules``) and again, through a
package-scoped autouse fixture, while this package's tests run. The extension's real script files
are loaded through the fake ``scripts_manager.load_scripts``.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.fakehost import FakeHost

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = FakeHost("sdnext", os.path.join(HERE, "fake_sdnext"))
FAKE.activate()  # before the test modules import ``modules`` (collection)
pytest_collectstart = FAKE.collect_hook()  # ... also when another package's conftest loaded later
_fake_host = FAKE.fixture()  # and again while this package's tests run

from .sdnext_env import SDNext  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """These models are tiny: one thread is as fast, and far faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sdnext():
    env = SDNext()
    env.start()
    try:
        yield env
    finally:
        env.stop()
