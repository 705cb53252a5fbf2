"""The bench tests run single-threaded: on a shared machine, OpenMP threads waiting for a busy
sibling make small forwards many times slower; one thread keeps the suite fast and steady."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
