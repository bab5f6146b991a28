"""Reference networks behind the metrics, with the module names of the released weight files."""
from dawn_train.metrics.networks.arcface import IResNet, iresnet100
from dawn_train.metrics.networks.i3d import InceptionI3d
from dawn_train.metrics.networks.inception import FIDInceptionV3
from dawn_train.metrics.networks.syncnet import SyncNet

__all__ = ["FIDInceptionV3", "IResNet", "InceptionI3d", "SyncNet", "iresnet100"]
