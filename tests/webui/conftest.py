"""Fixtures for the WebUI glue tests: a fake WebUI (tests/webui/fake_webui) and tiny real models.

The fake ``modules`` and ``gradio`` packages (tests/webui/fake_webui) are put in place for this
directory's tests by tests/fakehost.py, which lets other host fakes live in the same pytest run;
the extension's real script files are loaded through the fake ``scripts.load_scripts``.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.fakehost import FakeHost

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = FakeHost("a1111", os.path.join(HERE, "fake_webui"))
FAKE.activate()  # before the test modules import ``modules`` (collection)
pytest_collectstart = FAKE.collect_hook()  # ... also when another package's conftest loaded later
_fake_host = FAKE.fixture()  # and again while this package's tests run

from .webui_env import WebUI, sdpa_attention  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def _sdpa():
    """ldm's own attention materialises N x N; run it through SDPA as the WebUI does."""
    with sdpa_attention():
        yield


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """These models are tiny: one thread is as fast, and far faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def webui():
    env = WebUI()
    env.start()
    try:
        yield env
    finally:
        env.stop()
