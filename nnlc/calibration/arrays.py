"""Calibration sources that are arrays already: an npz file, a user's callable, Gaussian noise.

npz: one array per graph input name. An array of the input's rank holds samples on its first axis
(they are batched like any other samples); an array of one rank more holds whole feeds (entry i is
the value in feed i, as onnxruntime's `CalibrationDataReader.get_next()` feeds stacked); a 0-d
array for a 0-d input goes into every feed. Loaded with `allow_pickle=False`: arrays of Python
objects are refused, never unpickled.

`package.module:function`: the function, called with no arguments, returns an iterable of feeds
(dicts of graph input name -> array); feeds are taken as they are until `samples` samples are in.
The current directory is tried as well when the module is not found on `sys.path`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx

from nnlc.calibration.base import (
    CalibrationError, CalibrationOptions, CalibrationSet, InputSpec, Progress, Samples,
    check_feed, check_names, check_value, feed_count, input_specs, is_sequence_model, report, split_and_batch,
    split_feeds, split_note, subsample,
)

CALLABLE_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError)


def is_callable_source(source: str) -> bool:
    """Whether `source` reads as `package.module:function`."""
    return bool(CALLABLE_PATTERN.match(source))


def _choose_feeds(counts: list[int], wanted: int, seed: int) -> list[int]:
    """Sorted indices of a seeded subset of feeds holding at least `wanted` samples (all if fewer)."""
    if sum(counts) <= wanted:
        return list(range(len(counts)))
    chosen, total = [], 0
    for index in np.random.default_rng([seed, 0]).permutation(len(counts)):
        if total >= wanted:
            break
        chosen.append(int(index))
        total += counts[index]
    return sorted(chosen)


def _read_npz(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise CalibrationError(f"{path}: not a readable npz file ({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CalibrationError(f"{path}: not an npz archive (a single array); save one array per input "
                               f"name with np.savez")
    with archive:
        check_names(archive.files, specs, str(path))
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise CalibrationError(f"{path}: array {name!r} holds Python objects; nnlc never "
                                           f"unpickles; save numeric arrays") from None
                raise CalibrationError(f"{path}: array {name!r} is unreadable ({error})") from None
            except _READ_ERRORS as error:
                raise CalibrationError(f"{path}: array {name!r} is unreadable "
                                       f"({type(error).__name__}: {error})") from None
    return arrays


def load_npz(path: Path, model: onnx.ModelProto, options: CalibrationOptions,
             progress: Progress | None = None) -> CalibrationSet:
    """Samples or stacked feeds from an npz file (see the module docstring)."""
    specs = input_specs(model)
    arrays = _read_npz(path, specs)
    by_name = {spec.name: spec for spec in specs}
    constants, per_sample, per_feed = {}, {}, {}
    for name, array in arrays.items():
        spec, what = by_name[name], f"{path}: array {name!r}"
        rank = spec.rank
        if rank == 0 and array.ndim == 0:
            constants[name] = check_value(array, spec, what)
        elif rank is None or array.ndim == rank:
            per_sample[name] = array
        elif array.ndim == rank + 1:
            per_feed[name] = array
        else:
            raise CalibrationError(f"{what}: rank {array.ndim} (shape {list(array.shape)}) fits neither "
                                   f"samples ({rank}) nor stacked feeds ({rank + 1}) of input "
                                   f"{name!r} {spec.describe()}")
    if per_sample and per_feed:
        raise CalibrationError(f"{path}: mixes per-sample arrays ({', '.join(per_sample)}) and stacked "
                               f"feeds ({', '.join(per_feed)}); give every array the same form")
    varying = per_sample or per_feed
    if not varying:
        raise CalibrationError(f"{path}: holds only 0-d constants; at least 2 samples are needed")
    lengths = {name: len(array) for name, array in varying.items()}
    if len(set(lengths.values())) > 1:
        raise CalibrationError(f"{path}: arrays disagree on the number of "
                               f"{'samples' if per_sample else 'feeds'}: "
                               + ", ".join(f"{name} {length}" for name, length in lengths.items()))
    count = next(iter(lengths.values()))
    sequential = is_sequence_model(specs)
    if per_sample:
        for name, array in per_sample.items():
            check_value(array, by_name[name], f"{path}: array {name!r}", skip_first_dim=True)
        keep = subsample(count, options.samples, np.random.default_rng([options.seed, 0]))
        samples = Samples(len(keep), keep.copy(), {name: a[keep] for name, a in per_sample.items()},
                          constants=constants)
        result, _ = split_and_batch(samples, specs, options, str(path), sequential=sequential)
        result.description = (f"{path.name}: {count} samples, {len(keep)} used "
                              f"{split_note(result, False, 'sample')}")
        return result
    feeds = [{name: array[index] for name, array in per_feed.items()} | constants for index in range(count)]
    for index, feed in enumerate(feeds):
        for name, value in feed.items():
            feed[name] = check_value(value, by_name[name], f"{path}: feed {index} of array {name!r}")
        report(progress, index + 1, count, "npz feeds")
    counts = [feed_count(feed, specs) for feed in feeds]
    keep = _choose_feeds(counts, options.samples, options.seed)
    result, _ = split_feeds([feeds[i] for i in keep], list(range(len(keep))), [counts[i] for i in keep],
                            specs, options, str(path), sequential)
    result.description = (f"{path.name}: {count} feeds of {sum(counts)} samples, {len(keep)} feeds used "
                           f"{split_note(result, False, 'feed')}")
    return result


def _import_function(source: str):
    module_name, function_name = source.split(":")
    added = False
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name.split(".")[0] or os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            added = True
            module = importlib.import_module(module_name)
    except CalibrationError:
        raise
    except Exception as error:
        raise CalibrationError(f"{source}: cannot import module {module_name!r} "
                               f"({type(error).__name__}: {error})") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    function = getattr(module, function_name, None)
    if not callable(function):
        raise CalibrationError(f"{source}: module {module_name!r} has no function {function_name!r}")
    return function


def load_callable(source: str, model: onnx.ModelProto, options: CalibrationOptions,
                  progress: Progress | None = None) -> CalibrationSet:
    """Feeds from `package.module:function` until `options.samples` samples are in."""
    specs = input_specs(model)
    function = _import_function(source)
    feeds, counts = [], []
    try:
        iterator = iter(function())
        while sum(counts) < options.samples:
            try:
                feed = next(iterator)
            except StopIteration:
                break
            feed = check_feed(feed, specs, f"{source}: feed {len(feeds)}")
            feeds.append(feed)
            counts.append(feed_count(feed, specs))
            report(progress, min(sum(counts), options.samples), options.samples, "calibration feeds")
    except CalibrationError:
        raise
    except Exception as error:
        raise CalibrationError(f"{source}: raised {type(error).__name__}: {error}") from None
    if not feeds:
        raise CalibrationError(f"{source}: yielded no feeds")
    result, _ = split_feeds(feeds, list(range(len(feeds))), counts, specs, options, source,
                            is_sequence_model(specs))
    result.description = f"{source}: {len(feeds)} feeds {split_note(result, False, 'feed')}"
    return result


def load_gaussian(model: onnx.ModelProto, options: CalibrationOptions,
                  progress: Progress | None = None) -> CalibrationSet:
    """Standard normal values for every float input (dynamic dims: batch_size first, 16 elsewhere)."""
    from nnlc.training.data import make_batch_source

    specs = input_specs(model)
    try:
        batch = make_batch_source("gaussian", model, options.batch_size, seed=options.seed)
        first = batch(0)["inputs"]
    except ValueError as error:
        raise CalibrationError(f"gaussian calibration: {error}") from None
    rows = feed_count(first, specs)
    count = max(2, -(-options.samples // rows))
    feeds = [first] + [batch(step)["inputs"] for step in range(1, count)]
    counts = [rows] * count
    result, _ = split_feeds(feeds, list(range(count)), counts, specs, options, "gaussian")
    result.description = f"gaussian noise: {count} feeds of {rows} {split_note(result, False, 'feed')}"
    return result
