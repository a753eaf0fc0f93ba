"""Calibration crops of a folder of photos (png / jpg / jpeg) or of the bundled train photos.

Each photo is decoded once with Pillow (refused above `MAX_PIXELS` before its pixels are decoded),
converted to RGB (or grey for a 1-channel input), and cut into seeded random crops: a box of
10-100% of the area, aspect ratio in [3/4, 4/3] (`nnlc.data.images.sample_crop_box`), resized to
the input's H x W by box-averaging + bilinear (`resize_bilinear`), scaled to [0, 1], normalised
with mean / std (ImageNet's by default) and laid out NCHW or NHWC. `samples` crops in all,
spread evenly over the photos, so a few dozen photos still give a few hundred crops; with more
photos than samples, a seeded subset of photos gives one crop each. Photo k's crops come from
`np.random.default_rng([seed, 3, k])`. The split is by photo where there are >= 4 of them.

The built-in `images` source crops the *train* photos of `nnlc.data.images`; fidelity is measured
on the held-out photos, so calibration never sees them.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from nnlc.calibration.base import (
    CalibrationError, CalibrationOptions, CalibrationSet, InputSpec, Progress, Samples, input_specs,
    report, split_and_batch, split_note, subsample,
)
from nnlc.data import images as data_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PIXELS = 50_000_000
DEFAULT_IMAGE_SIZE = data_images.IMAGE_SIZE
GREY_MEAN = (float(np.mean(data_images.IMAGENET_MEAN)),)
GREY_STD = (float(np.mean(data_images.IMAGENET_STD)),)


def image_files(directory: Path) -> list[Path]:
    """Sorted png / jpg / jpeg files (any case) directly in `directory`."""
    return sorted(path for path in directory.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class ImageTarget:
    """What one crop must become for the model's image input."""

    name: str
    layout: str
    channels: int
    height: int
    width: int
    mean: np.ndarray
    std: np.ndarray

    def finish(self, crops_hwc: np.ndarray) -> np.ndarray:
        """[N, H, W, C] float32 pixels in [0, 255] -> normalised float32 in the input's layout
        (normalised in place to keep memory down: 256 crops of 224 x 224 are 154 MB)."""
        values = crops_hwc
        values /= np.float32(255.0)
        values -= self.mean
        values /= self.std
        if self.layout == "nchw":
            values = np.moveaxis(values, -1, 1)
        return np.ascontiguousarray(values, dtype=np.float32)


def image_target(specs: list[InputSpec], options: CalibrationOptions) -> ImageTarget:
    """The model's one image input (float, rank 4) and how crops must look for it."""
    images = [spec for spec in specs if spec.dtype.kind == "f" and spec.rank == 4]
    if len(images) != 1:
        raise CalibrationError("image calibration needs a model with one float rank-4 input, found "
                               + (", ".join(f"{s.name} {s.describe()}" for s in specs) or "no input"))
    spec = images[0]
    for other in specs:
        if other is not spec:
            raise CalibrationError(f"image calibration: model input {other.name!r} is left without data "
                                   f"(images fill only {spec.name!r})")
    dims = spec.dims
    layout = options.layout
    if layout is None:
        layout = "nhwc" if dims[1] not in (1, 3) and dims[3] in (1, 3) else "nchw"
    channel_axis, spatial = (1, (2, 3)) if layout == "nchw" else (3, (1, 2))
    channels = dims[channel_axis] or 3
    if channels not in (1, 3):
        raise CalibrationError(f"image calibration: input {spec.name!r} {spec.describe()} has {channels} "
                               f"channels in layout {layout}; images give 1 or 3")
    fixed = [dims[axis] for axis in spatial]
    if options.image_size is not None and any(d is not None and d != options.image_size for d in fixed):
        raise CalibrationError(f"image_size {options.image_size} does not fit input {spec.name!r} "
                               f"{spec.describe()}")
    default = options.image_size or next((d for d in fixed if d is not None), DEFAULT_IMAGE_SIZE)
    height, width = (d if d is not None else default for d in fixed)
    mean = options.image_mean or (tuple(data_images.IMAGENET_MEAN) if channels == 3 else GREY_MEAN)
    std = options.image_std or (tuple(data_images.IMAGENET_STD) if channels == 3 else GREY_STD)
    for label, values in (("image_mean", mean), ("image_std", std)):
        if len(values) != channels:
            raise CalibrationError(f"{label} has {len(values)} values; input {spec.name!r} has {channels} channels")
    if any(float(value) <= 0 for value in std):
        raise CalibrationError(f"image_std must be positive, got {tuple(std)}")
    return ImageTarget(spec.name, layout, channels, height, width,
                       np.asarray(mean, np.float32), np.asarray(std, np.float32))


def decode_image(path: Path, channels: int = 3) -> np.ndarray:
    """HxWxC uint8 pixels of one file; CalibrationError if unreadable or above MAX_PIXELS."""
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise CalibrationError(f"{path}: {width}x{height} image is above the cap of {MAX_PIXELS:,} "
                                       f"pixels; downscale it first")
            pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    except CalibrationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as error:
        raise CalibrationError(f"{path}: unreadable image ({type(error).__name__}: {error})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise CalibrationError(f"{path}: empty image")
    return pixels


def crops_of(pixels: np.ndarray, count: int, rng: np.random.Generator, target: ImageTarget) -> np.ndarray:
    """`count` seeded random crops of HxWxC pixels, resized: [count, H, W, C] float32 in [0, 255]."""
    out = np.empty((count, target.height, target.width, pixels.shape[2]), np.float32)
    for index in range(count):
        box = data_images.sample_crop_box(rng, "", pixels.shape)
        patch = pixels[box.top:box.top + box.height, box.left:box.left + box.width]
        out[index] = np.clip(data_images.resize_bilinear(patch, target.height, target.width), 0.0, 255.0)
    return out


def _crop_counts(n_images: int, samples: int) -> list[int]:
    return [samples // n_images + (index < samples % n_images) for index in range(n_images)]


def _crop_set(load: Callable[[int], np.ndarray], n_images: int, specs: list[InputSpec], target: ImageTarget,
              options: CalibrationOptions, progress: Progress | None) -> tuple[CalibrationSet, bool, int]:
    counts = _crop_counts(n_images, options.samples)
    total = sum(counts)
    crops = np.empty((total, target.height, target.width, target.channels), np.float32)
    groups = np.repeat(np.arange(n_images), counts)
    start = 0
    for index, count in enumerate(counts):
        if not count:
            continue
        crops[start:start + count] = crops_of(load(index), count,
                                              np.random.default_rng([options.seed, 3, index]), target)
        start += count
        report(progress, index + 1, n_images, "calibration images")
    samples = Samples(total, groups, {target.name: target.finish(crops)})
    result, by_group = split_and_batch(samples, specs, options, "image calibration")
    return result, by_group, total


def load_image_folder(directory: Path, model: onnx.ModelProto, options: CalibrationOptions,
                      progress: Progress | None = None) -> CalibrationSet:
    """Seeded crops of the photos in `directory` (see the module docstring)."""
    specs = input_specs(model)
    target = image_target(specs, options)
    files = image_files(directory)
    if not files:
        raise CalibrationError(f"{directory}: no png, jpg or jpeg files")
    chosen = [files[i] for i in subsample(len(files), options.samples,
                                          np.random.default_rng([options.seed, 0]))]

    def load(index: int) -> np.ndarray:
        return decode_image(chosen[index], target.channels)

    result, by_group, total = _crop_set(load, len(chosen), specs, target, options, progress)
    used = f"{len(files)} photos" + (f", {len(chosen)} used" if len(chosen) < len(files) else "")
    result.description = f"images in {directory}: {used} -> {total} crops {split_note(result, by_group, 'photo')}"
    return result


def _luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow's 'L' conversion."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(pixels.astype(np.float32) @ weights)[:, :, None].astype(np.uint8)


def load_builtin_images(model: onnx.ModelProto, options: CalibrationOptions,
                        progress: Progress | None = None) -> CalibrationSet:
    """Seeded crops of the bundled *train* photos of `nnlc.data.images`."""
    specs = input_specs(model)
    target = image_target(specs, options)
    try:
        sources = data_images.available_sources("train")
    except RuntimeError as error:
        raise CalibrationError(f"built-in images: {error} (install the bench extras: scikit-image, "
                               f"scikit-learn, matplotlib)") from None

    def load(index: int) -> np.ndarray:
        pixels = data_images.load_source_image(sources[index])
        return pixels if target.channels == 3 else _luminance(pixels)

    result, by_group, total = _crop_set(load, len(sources), specs, target, options, progress)
    result.description = (f"built-in images: {len(sources)} bundled train photos -> {total} crops "
                          f"{split_note(result, by_group, 'photo')}")
    return result
