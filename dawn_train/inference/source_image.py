"""The source image of `generate`: read and checked, then the face cropped as `data prep` crops its videos
(the default, any photo with one face), or the whole image resized (`--no-crop`, a ready face crop).

The crop path writes `<out stem>.crop.png` (what the model animates) and `<out stem>.initial_state.json` (the
image's pose, eye openness and face box measured by prep's estimators, in dawn_train units, plus the crop box in
the photo) beside the output video (`talk.mp4` -> `talk.crop.png`, `talk.initial_state.json`: generations into one
folder keep their own); that state is the reference of the generation (PBNet's start, the anchor of
`--pose-from` driving) unless --init-pose / --init-blink / --face-box are given."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.prep.landmarks import INSTALL, PrepExtraMissing
from dawn_train.data.prep.photo import prepare_photo
from dawn_train.log import get_logger

log = get_logger(__name__)
CONVERTIBLE_MODES = {"L", "LA", "P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "I;16"}
CROP_SUFFIX, STATE_SUFFIX = ".crop.png", ".initial_state.json"


class ImageError(ValueError):
    """Unusable input image; the message names the file."""


def read_image(path: str | Path):
    """Image file -> PIL RGB image, checked: it exists and decodes, its mode converts to RGB (grayscale,
    palette, RGBA, CMYK ... with a message; others are refused), at least 32 px on each side."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: a folder, not an image file" if path.is_dir() else f"{path}: no such image file")
    try:
        with Image.open(path) as handle:
            handle.load()
            image = handle.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: cannot be read as an image ({exc})") from exc
    if image.mode != "RGB":
        if image.mode not in CONVERTIBLE_MODES:
            raise ImageError(f"{path}: image mode {image.mode!r} is not supported; save it as 8-bit RGB")
        log.info("%s: converting %s image to RGB%s", path, image.mode, " (alpha dropped)" if "A" in image.mode else "")
        image = image.convert("RGB")
    width, height = image.size
    if min(width, height) < 32:
        raise ImageError(f"{path}: image is {width}x{height}, too small for a face (need at least 32 px)")
    return image


def side_files(out: str | Path) -> dict[str, str]:
    """The crop and initial-state files of the output video `out`: named after it, in its folder."""
    out = Path(out)
    return {"crop": str(out.with_name(out.stem + CROP_SUFFIX)), "initial_state": str(out.with_name(out.stem + STATE_SUFFIX))}


@dataclass
class CroppedSource:
    """The face crop (size, size, 3) uint8 and its measured state (dawn_train units), files written."""

    frame: np.ndarray
    pose: list[float]
    blink: list[float]
    face_box: list[float]
    files: dict[str, str]


def crop_source(path: str | Path, size: int, face_index: Optional[int], out: Path) -> CroppedSource:
    """Detect the face of the photo at `path`, crop it as prep does, measure its state, and write
    `<out stem>.crop.png` and `<out stem>.initial_state.json` beside `out` (`side_files`).  Raises ImageError (no face, several faces
    without `face_index`, the prep extra missing) with one line saying what to do."""
    photo = np.asarray(read_image(path), dtype=np.uint8)
    try:
        crop = prepare_photo(photo, size, face_index)
    except PrepExtraMissing as exc:
        raise ImageError(f"{path}: cropping the face needs mediapipe: {INSTALL}, or pass --no-crop for an image "
                         "that is already a face crop") from exc
    except PrepFailure as exc:
        raise ImageError(f"{path}: {exc}") from exc
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    files = side_files(out)
    Image.fromarray(crop.image).save(files["crop"])
    Path(files["initial_state"]).write_text(json.dumps({"image": str(path), **crop.state()}, indent=1))
    x0, y0, side = crop.box.as_list()
    log.info("%s: face %s cropped (a %d px square at x %d, y %d of the photo) -> %s", path, face_index or 0, side, x0, y0,
             files["crop"])
    return CroppedSource(crop.image, crop.pose.tolist(), crop.blink.tolist(), crop.face_box.tolist(), files)
