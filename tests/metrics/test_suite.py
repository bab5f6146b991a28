"""MetricSuite: each metric reads its own weight file; one without weights is unavailable with the reason, and the
suite still measures BAS and Blink/s."""
from __future__ import annotations

import pytest

from dawn_train.metrics.suite import TABLE, WEIGHT_KEYS, MetricSuite


def test_each_metric_takes_its_own_weight_file(tmp_path):
    missing = {key: str(tmp_path / f"no {key}.v1.pth") for key in set(WEIGHT_KEYS.values())}
    suite = MetricSuite(missing)
    assert set(suite.unavailable) == {"FID", "FVD16", "FVD32", "LSE", "CSIM"}
    for name, why in suite.unavailable.items():
        assert f"no {WEIGHT_KEYS[name]}.v1.pth" in why, (name, why)  # the file of its own key, named
    assert set(suite.generated) == set(suite.real) == {"BAS", "Blink_s"}


def test_a_subset_and_unknown_names():
    suite = MetricSuite(names=("BAS", "Blink/s"))
    assert suite.names == ("BAS", "Blink/s") and not suite.unavailable
    assert set(TABLE) >= {"FID", "LSE-C", "LSE-D"}
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(names=("FID", "PSNR"))
