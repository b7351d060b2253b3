"""Model tests run single-threaded: on a shared, loaded CPU, intra-op threads slow them ~10x."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
