"""dawn_train.models.precision: float32 islands under autocast, nothing changed without it."""
import pytest
import torch
from torch import nn

from dawn_train.models.precision import at_least_float32, float32_under_autocast


class Island(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @float32_under_autocast
    def forward(self, x, params):
        return {"out": self.linear(x), "shift": params["shift"] * 2, "autocast": torch.is_autocast_enabled("cpu")}


class Plain(Island):
    def forward(self, x, params):
        return Island.forward.__wrapped__(self, x, params)


def test_under_autocast_the_island_runs_in_float32_and_the_rest_in_bfloat16():
    island, plain, x = Island(), Plain(), torch.randn(3, 4)
    params = {"shift": torch.randn(3, 2).bfloat16()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, outside = island(x, params), plain(x, params)
    assert out["out"].dtype == torch.float32 and out["shift"].dtype == torch.float32 and not out["autocast"]
    assert outside["out"].dtype == torch.bfloat16 and outside["autocast"]
    torch.testing.assert_close(out["out"], island.linear(x))  # exactly the float32 computation


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_without_autocast_dtypes_are_kept(dtype):
    island = Island().to(dtype)
    out = island(torch.randn(3, 4, dtype=dtype), {"shift": torch.randn(3, 2, dtype=dtype)})
    assert out["out"].dtype == dtype and out["shift"].dtype == dtype  # a half model stays half, float64 stays float64
    assert at_least_float32(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64
    assert at_least_float32(torch.zeros(1, dtype=torch.float16)).dtype == torch.float32
    assert at_least_float32(torch.zeros(1, dtype=torch.long)).dtype == torch.long
