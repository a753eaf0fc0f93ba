"""Seeded 224x224 crops of photos that ship with scikit-image, scikit-learn and matplotlib.

Inputs for ImageNet classifiers (mobilenet_v2 in ../shared/models): float32 NCHW, RGB scaled to
[0, 1] and normalised with the ImageNet mean and std.

Train / held-out split: by *source image*. The two splits draw from disjoint sets of photos
(`TRAIN_SOURCES`, `HELDOUT_SOURCES`), so no held-out pixel is ever in a training crop, whatever the
seeds. The stereo motorcycle pair (near-duplicates) sits wholly in the training split. The
splits also use different random streams: crops for (seed, split) come from
`np.random.default_rng([seed, split_index])`.

A crop box covers a random 10-100% of the image area with aspect ratio in [3/4, 4/3] (log-uniform)
at a uniformly random position; it is resized to 224x224 by integer box-averaging (anti-aliasing)
followed by bilinear interpolation with half-pixel centres, in pure numpy. Photos that cannot be
loaded (e.g. a scikit-image file that would need a download) are skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from nnlc.data import check_split

IMAGE_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MIN_AREA_FRACTION = 0.10
MAX_LOG_ASPECT = float(np.log(4.0 / 3.0))

TRAIN_SOURCES = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
    "immunohistochemistry", "camera", "coins", "brick", "gravel", "cell", "china", "page",
)
HELDOUT_SOURCES = (
    "chelsea", "coffee", "grace_hopper", "flower", "retina", "moon", "grass",
)


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name.startswith("motorcycle_"):
            left, right, _ = skimage.data.stereo_motorcycle()
            return left if name.endswith("left") else right
        return getattr(skimage.data, name)()

    return load


def _sklearn_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")

    return load


def _load_grace_hopper() -> np.ndarray:
    import matplotlib
    import matplotlib.image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return matplotlib.image.imread(path)


def _loader(name: str) -> Callable[[], np.ndarray]:
    if name in ("china", "flower"):
        return _sklearn_loader(name)
    if name == "grace_hopper":
        return _load_grace_hopper
    return _skimage_loader(name)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Returns an HxWx3 uint8 copy: grey replicated to 3 channels, alpha dropped, floats scaled."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        scale = 255.0 if image.dtype.kind == "f" and image.max() <= 1.0 else 1.0
        image = np.clip(np.round(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"not an image: shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


@functools.cache
def load_source_image(name: str) -> np.ndarray | None:
    """Loads one bundled photo as HxWx3 uint8, or returns None (with a warning) if unavailable."""
    try:
        return to_rgb_uint8(_loader(name)())
    except Exception as error:  # a missing file, a blocked download, an old package ...
        warnings.warn(f"skipping source image {name!r}: {type(error).__name__}: {error}",
                      stacklevel=2)
        return None


def available_sources(split: str) -> tuple[str, ...]:
    """Names of the photos in `split` that load on this machine."""
    names = TRAIN_SOURCES if check_split(split) == "train" else HELDOUT_SOURCES
    available = tuple(name for name in names if load_source_image(name) is not None)
    if not available:
        raise RuntimeError(f"no source image of split {split!r} could be loaded")
    return available


@dataclasses.dataclass(frozen=True)
class CropBox:
    """A crop of source image `source`: rows [top, top + height), columns [left, left + width)."""

    source: str
    top: int
    left: int
    height: int
    width: int


def sample_crop_box(rng: np.random.Generator, source: str, image_shape: tuple[int, ...]) -> CropBox:
    """Draws a box covering 10-100% of the image area with aspect ratio in [3/4, 4/3]."""
    image_height, image_width = image_shape[:2]
    area = rng.uniform(MIN_AREA_FRACTION, 1.0) * image_height * image_width
    aspect = float(np.exp(rng.uniform(-MAX_LOG_ASPECT, MAX_LOG_ASPECT)))  # width / height
    height = int(round(min(np.sqrt(area / aspect), image_height)))
    width = int(round(min(np.sqrt(area * aspect), image_width)))
    height, width = max(height, 1), max(width, 1)
    top = int(rng.integers(0, image_height - height + 1))
    left = int(rng.integers(0, image_width - width + 1))
    return CropBox(source, top, left, height, width)


def crop_boxes(n: int, seed: int = 0, split: str = "heldout") -> list[CropBox]:
    """The `n` seeded crop boxes of `split` (source chosen uniformly per crop)."""
    split_index = 0 if check_split(split) == "train" else 1
    sources = available_sources(split)
    rng = np.random.default_rng([seed, split_index])
    boxes = []
    for _ in range(n):
        source = sources[int(rng.integers(len(sources)))]
        boxes.append(sample_crop_box(rng, source, load_source_image(source).shape))
    return boxes


def _box_downsample(image: np.ndarray, factor_y: int, factor_x: int) -> np.ndarray:
    height = image.shape[0] // factor_y * factor_y
    width = image.shape[1] // factor_x * factor_x
    blocks = image[:height, :width].reshape(
        height // factor_y, factor_y, width // factor_x, factor_x, -1
    )
    return blocks.mean(axis=(1, 3))


def _bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    positions = np.clip(positions, 0.0, size_in - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (positions - low).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes HxWxC to height x width x C (float32): integer box-average, then bilinear."""
    image = np.asarray(image, dtype=np.float32)
    factor_y = max(image.shape[0] // height, 1)
    factor_x = max(image.shape[1] // width, 1)
    if factor_y > 1 or factor_x > 1:
        image = _box_downsample(image, factor_y, factor_x)
    row_low, row_high, row_weight = _bilinear_axis(image.shape[0], height)
    col_low, col_high, col_weight = _bilinear_axis(image.shape[1], width)
    rows = (image[row_low] * (1 - row_weight)[:, None, None]
            + image[row_high] * row_weight[:, None, None])
    return (rows[:, col_low] * (1 - col_weight)[None, :, None]
            + rows[:, col_high] * col_weight[None, :, None])


def normalize_imagenet(images_hwc: np.ndarray) -> np.ndarray:
    """Maps [..., H, W, 3] values in [0, 255] to ImageNet-normalised float32 [..., 3, H, W]."""
    scaled = np.asarray(images_hwc, dtype=np.float32) / 255.0
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(normalised, -1, -3), dtype=np.float32)


def render_crop(box: CropBox, size: int = IMAGE_SIZE) -> np.ndarray:
    """The crop `box` resized to size x size, HxWx3 float32 in [0, 255]."""
    image = load_source_image(box.source)
    patch = image[box.top:box.top + box.height, box.left:box.left + box.width]
    return np.clip(resize_bilinear(patch, size, size), 0.0, 255.0)


def image_crops(n: int, seed: int = 0, split: str = "heldout",
                size: int = IMAGE_SIZE) -> np.ndarray:
    """`n` seeded crops of `split` as float32 [n, 3, size, size], ImageNet-normalised."""
    boxes = crop_boxes(n, seed, split)
    batch = np.empty((n, 3, size, size), dtype=np.float32)
    for index, box in enumerate(boxes):
        batch[index] = normalize_imagenet(render_crop(box, size))
    return batch


def image_crop_batches(n: int, seed: int = 0, split: str = "heldout", batch_size: int = 32,
                       size: int = IMAGE_SIZE) -> Iterator[np.ndarray]:
    """The crops of `image_crops(n, seed, split)`, rendered lazily in batches of `batch_size`."""
    boxes = crop_boxes(n, seed, split)
    for start in range(0, n, batch_size):
        chunk = boxes[start:start + batch_size]
        yield np.stack([normalize_imagenet(render_crop(box, size)) for box in chunk])
