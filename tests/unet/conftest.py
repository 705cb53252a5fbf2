"""Tiny real ldm UNets (SD1.5 / SD2 / SDXL block layouts) with SDPA attention, as in the WebUI."""

import pytest

from lib_hidiff import zoo

from .helpers import tiny


@pytest.fixture(autouse=True)
def _sdpa():
    with zoo.sdpa_attention():
        yield


@pytest.fixture(scope="session")
def sd1():
    return tiny("sd1")


@pytest.fixture(scope="session")
def sd2():
    return tiny("sd2")


@pytest.fixture(scope="session")
def sdxl():
    return tiny("sdxl")
