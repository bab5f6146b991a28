"""Evaluation metrics of DAWN Table 1 as torchmetrics Metrics (no lightning imports here).

FID, FVD (16/32), LSE (LSE-C/LSE-D), CSIM load reference networks from explicit weight paths and
raise `MetricUnavailable` when a file is missing; BAS and BlinkRate need no network.
See README.md in this folder for references, weight files and deviations.
"""
from dawn_train.metrics.bas import BAS
from dawn_train.metrics.blink import BlinkRate
from dawn_train.metrics.csim import CSIM
from dawn_train.metrics.fid import FID
from dawn_train.metrics.frechet import FrechetMetric, frechet_distance
from dawn_train.metrics.fvd import FVD
from dawn_train.metrics.sync import LSE
from dawn_train.metrics.weights import MetricUnavailable, WeightSpec, load_weights

__all__ = ["BAS", "BlinkRate", "CSIM", "FID", "FVD", "FrechetMetric", "LSE", "MetricUnavailable",
           "WeightSpec", "frechet_distance", "load_weights"]
