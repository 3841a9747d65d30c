import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed every test; run it on one intra-op thread (restored afterwards).

    `make test` runs two pytest workers on two cores: two OpenMP threads each oversubscribed them and
    slowed training steps down by an order of magnitude.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so that -0.0 vs 0.0 and NaN payloads count as differences."""
    return t.detach().contiguous().view(torch.int32 if t.element_size() == 4 else torch.int64)


@pytest.fixture
def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


@pytest.fixture
def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)
    )
