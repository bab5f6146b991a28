"""PBNet: DAWN's pose/blink CVAE (architecture ``transformerreemb5``) as plain nn.Modules."""
from .cvae import PBNet, lengths_to_mask
from .decoder import PBNetDecoder
from .encoder import PBNetEncoder
from .normalization import POSE_MAX, POSE_MIN, PoseNormalizer, denormalize_pose, normalize_pose
from .relative_position import RelativePositionBias, relative_position_bucket
from .rotary import RotaryEmbedding

__all__ = [
    "PBNet", "PBNetEncoder", "PBNetDecoder", "RelativePositionBias", "RotaryEmbedding", "PoseNormalizer",
    "POSE_MIN", "POSE_MAX", "normalize_pose", "denormalize_pose", "lengths_to_mask", "relative_position_bucket",
]
