"""Fixtures for the Forge glue tests: a fake Forge 2.x (tests/forge/fake_forge) and tiny real models.

The fake ``modules`` / ``modules_forge`` / ``backend`` / ``gradio`` packages are put in place for
this directory's tests by tests/fakehost.py, so the A1111 fake (tests/webui) and this one run in one
pytest process; the extension's real script files are loaded through the fake
``scripts.load_scripts``.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.fakehost import FakeHost

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = FakeHost("forge", os.path.join(HERE, "fake_forge"))
FAKE.activate()  # before the test modules import ``modules`` (collection)
pytest_collectstart = FAKE.collect_hook()  # ... also when another package's conftest loaded later
_fake_host = FAKE.fixture()  # and again while this package's tests run

from .forge_env import ForgeUI  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """These models are tiny: one thread is as fast, and far faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def forge():
    env = ForgeUI()
    env.start()
    try:
        yield env
    finally:
        env.stop()
