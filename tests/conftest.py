import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # One torch thread was fastest on the 2-core CI machines (perf-notes.md).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
