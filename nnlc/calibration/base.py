"""What every calibration source shares: options, the result type, graph inputs, checks, split.

A source turns its files into *samples* (one row of the model's batch axis each, tagged with the
group it came from: a source image, a clip, a sentence) or into ready-made *feeds* (a sequence
chunk, a user's feed), then `split_and_batch` / `split_feeds` divide them into an optimisation
part and a hold-out and check every feed against the graph inputs (`check_feed`).

Split rule: with >= `MIN_GROUPS_FOR_GROUP_SPLIT` groups, whole groups go to one side (no hold-out
pixel or sample is in an optimisation sample); else samples are split one by one. Either way a
seeded permutation picks the hold-out, about `holdout_fraction` of the samples, never all or none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import onnx

from nnlc.errors import NnlcError

MIN_GROUPS_FOR_GROUP_SPLIT = 4
LAYOUTS = ("nchw", "nhwc")

Progress = Callable[[int, int, str], None]
Feed = dict[str, np.ndarray]


class CalibrationError(NnlcError):
    """Calibration inputs are missing, unreadable, or do not fit the model (one line for users)."""


@dataclasses.dataclass
class CalibrationOptions:
    """How to turn a calibration source into feeds (see `load_calibration`)."""

    samples: int = 256  # total wanted before the split; small sources give seeded variants or fewer
    holdout_fraction: float = 0.25
    seed: int = 0
    batch_size: int = 8  # samples per feed where the batch dim is dynamic; else the fixed size
    image_size: int | None = None  # default: the input's fixed H/W, else 224
    image_mean: tuple[float, ...] | None = None  # per channel, pixels in [0, 1]; default ImageNet's
    image_std: tuple[float, ...] | None = None
    layout: str | None = None  # 'nchw' | 'nhwc'; default from the input's fixed channel dim
    sample_rate: int | None = None  # default 16000
    tokenizer: str | None = None  # tokenizer.json (Hugging Face tokenizers) or WordPiece vocab.txt
    max_length: int = 128


def parse_floats(values: str | Sequence[str] | None, what: str) -> tuple[float, ...] | None:
    """Per-channel values such as --image_mean: a list of strings, or one string split at ',' or ';'."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.replace(";", ",").split(",") if v.strip()]
    if not values:
        return None
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise CalibrationError(f"{what}: comma-separated numbers expected, got {','.join(values)!r}") from None


def _count_rows(feed: Feed) -> int:
    for value in feed.values():
        if np.ndim(value) >= 1:
            return int(np.shape(value)[0])
    return 1


@dataclasses.dataclass
class Stream:
    """One clip for a stateful network, run frame by frame with the state fed back."""

    frames: list[np.ndarray]  # the `frame_input` value of each step, in order
    initial_state: np.ndarray
    frame_input: str = "input"
    state_input: str = "state"
    state_output: int = 1  # index of the state among the graph's outputs
    constants: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # e.g. {"sr": 16000}


@dataclasses.dataclass
class CalibrationSet:
    """Feeds for onnxruntime, split into an optimisation part and a disjoint hold-out."""

    optimise: list[Feed]
    holdout: list[Feed]  # never used to optimise; about holdout_fraction of the samples
    description: str  # one line for the user
    sequential: bool = False  # a feed's rows are the time steps of one sequence (Silero's [T, 576])
    optimise_counts: list[int] = dataclasses.field(default_factory=list)  # samples per feed
    holdout_counts: list[int] = dataclasses.field(default_factory=list)
    # stateful models (Silero's input/state/sr): the hold-out clips whole, to run free (each frame's
    # state from the network's own previous frame), as the network runs in use; fidelity is checked on
    # these instead of the teacher-forced hold-out frames
    holdout_streams: list[Stream] = dataclasses.field(default_factory=list)
    optimise_streams: list[Stream] = dataclasses.field(default_factory=list)  # the optimisation clips, whole
    holdout_groups: list[int] = dataclasses.field(default_factory=list)  # group ids held out (by-group split)

    @staticmethod
    def _total(feeds: list[Feed], counts: list[int]) -> int:
        if len(counts) == len(feeds):
            return int(sum(counts))
        return sum(_count_rows(feed) for feed in feeds)

    @property
    def n_optimise(self) -> int:
        """Samples in the optimisation feeds."""
        return self._total(self.optimise, self.optimise_counts)

    @property
    def n_holdout(self) -> int:
        """Samples in the hold-out feeds."""
        return self._total(self.holdout, self.holdout_counts)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One non-initializer graph input: numpy dtype and dims (None = dynamic; dims None = unknown rank)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None

    def __iter__(self):  # unpacks as (name, dtype, dims)
        return iter((self.name, self.dtype, None if self.dims is None else list(self.dims)))

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    def describe(self) -> str:
        dims = "?" if self.dims is None else "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"
        return f"{self.dtype.name}{dims}"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's graph inputs that are not initializers, in graph order."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise CalibrationError(f"model input {value.name!r} is not a tensor; cannot calibrate it")
        tensor_type = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"model input {value.name!r} has an unsupported element type "
                                   f"{tensor_type.elem_type}") from None
        dims = None
        if tensor_type.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


def graph_inputs(model: onnx.ModelProto) -> list[tuple[str, np.dtype, list[int | None] | None]]:
    """(name, numpy dtype, dims with None for dynamic) of each non-initializer graph input.

    dims is None where the graph gives no shape at all (unknown rank).
    """
    return [tuple(spec) for spec in input_specs(model)]


def check_options(options: CalibrationOptions) -> None:
    """Raises CalibrationError for options no source could honour."""
    if not isinstance(options.samples, int) or options.samples < 2:
        raise CalibrationError(f"calibration samples must be an integer >= 2 (one to optimise, one to "
                               f"hold out), got {options.samples!r}")
    if not 0.0 < float(options.holdout_fraction) < 1.0:
        raise CalibrationError(f"holdout_fraction must lie strictly between 0 and 1, got {options.holdout_fraction!r}")
    if not isinstance(options.batch_size, int) or options.batch_size < 1:
        raise CalibrationError(f"calibration batch_size must be an integer >= 1, got {options.batch_size!r}")
    if options.layout is not None and options.layout not in LAYOUTS:
        raise CalibrationError(f"layout must be one of {', '.join(LAYOUTS)}, got {options.layout!r}")
    if options.image_size is not None and (not isinstance(options.image_size, int) or options.image_size < 1):
        raise CalibrationError(f"image_size must be a positive integer, got {options.image_size!r}")
    if options.sample_rate is not None and (not isinstance(options.sample_rate, int) or options.sample_rate < 1):
        raise CalibrationError(f"sample_rate must be a positive integer, got {options.sample_rate!r}")
    if not isinstance(options.max_length, int) or options.max_length < 2:
        raise CalibrationError(f"max_length must be an integer >= 2, got {options.max_length!r}")


def cast_safely(array: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """`array` as `dtype` if that is a same-kind conversion that keeps the values, else an error.

    Allowed: float -> float (float64 -> float32), int/uint -> int/uint where every value fits,
    bool -> bool. Anything else (float -> int, int -> float, object, strings) is refused.
    """
    array = np.asarray(array)
    if array.dtype == dtype:
        return array
    source, target = array.dtype, np.dtype(dtype)
    if source.kind == "f" and target.kind == "f":
        with np.errstate(over="ignore"):
            cast = array.astype(target)
        if not np.array_equal(np.isfinite(cast), np.isfinite(array)):
            raise CalibrationError(f"{what}: values overflow {target.name}")
        return cast
    if source.kind in "iu" and target.kind in "iu":
        if array.size:
            info = np.iinfo(target)
            if int(array.min()) < info.min or int(array.max()) > info.max:
                raise CalibrationError(f"{what}: values outside the range of {target.name}")
        return array.astype(target)
    raise CalibrationError(f"{what}: dtype {source.name} cannot be cast safely to the model's {target.name}")


def check_value(array: np.ndarray, spec: InputSpec, what: str, skip_first_dim: bool = False) -> np.ndarray:
    """`array` cast to the input's dtype, after checking its rank and fixed dims (maybe not dim 0)."""
    array = cast_safely(array, spec.dtype, what)
    if spec.dims is None:
        return array
    if array.ndim != len(spec.dims):
        raise CalibrationError(f"{what}: rank {array.ndim} (shape {list(array.shape)}), model input "
                               f"{spec.name!r} has rank {len(spec.dims)} ({spec.describe()})")
    for axis, (size, dim) in enumerate(zip(array.shape, spec.dims)):
        if dim is not None and size != dim and not (skip_first_dim and axis == 0):
            raise CalibrationError(f"{what}: shape {list(array.shape)} does not fit model input "
                                   f"{spec.name!r} {spec.describe()} (axis {axis})")
    return array


def check_names(names: Sequence[str], specs: Sequence[InputSpec], where: str) -> None:
    """Every name is a graph input and every graph input has a name."""
    known = [spec.name for spec in specs]
    for name in names:
        if name not in known:
            raise CalibrationError(f"{where}: {name!r} is not an input of the model "
                                   f"(inputs: {', '.join(known) or 'none'})")
    for name in known:
        if name not in names:
            raise CalibrationError(f"{where}: model input {name!r} is left without data")


def check_feed(feed: Feed, specs: Sequence[InputSpec], where: str) -> Feed:
    """The feed with every value cast to its input's dtype; raises CalibrationError if it does not fit."""
    if not isinstance(feed, dict):
        raise CalibrationError(f"{where}: a feed must be a dict of input name -> array, got {type(feed).__name__}")
    check_names(list(feed), specs, where)
    checked = {}
    for spec in specs:
        value = feed[spec.name]
        try:
            value = np.asarray(value)
        except Exception as error:  # ragged lists and the like
            raise CalibrationError(f"{where}: input {spec.name!r} is not an array ({error})") from None
        checked[spec.name] = check_value(value, spec, f"{where}: input {spec.name!r}")
    return checked


def choose_holdout(groups: np.ndarray, fraction: float, rng: np.random.Generator,
                   weights: np.ndarray | None = None, unit: str = "sample") -> tuple[np.ndarray, bool]:
    """Boolean hold-out mask over items, and whether the split is by group.

    `groups[i]` is the group (source file) of item i, `weights[i]` its number of samples (1 each by
    default); the hold-out gets about `fraction` of the samples, and never all or none of the items.
    """
    groups = np.asarray(groups)
    count = len(groups)
    if count < 2:
        raise CalibrationError(f"{count} calibration {unit}(s): at least 2 are needed (one to optimise, "
                               f"one to hold out)")
    weights = np.ones(count, np.int64) if weights is None else np.asarray(weights, np.int64)
    target = max(1, int(round(fraction * int(weights.sum()))))
    unique = np.unique(groups)
    by_group = len(unique) >= MIN_GROUPS_FOR_GROUP_SPLIT
    keys = unique if by_group else np.arange(count)
    sizes = [int(weights[groups == key].sum()) for key in unique] if by_group else list(weights)
    chosen, taken = [], 0
    for index in rng.permutation(len(keys)):  # take an item where it brings the hold-out nearer target
        if len(chosen) == len(keys) - 1 or taken >= target:
            break
        if not chosen or taken + sizes[index] - target < target - taken:
            chosen.append(index)
            taken += int(sizes[index])
    if by_group:
        return np.isin(groups, unique[chosen]), True
    mask = np.zeros(count, bool)
    mask[chosen] = True
    return mask, False


def subsample(count: int, wanted: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded subset of `wanted` of `count` items (all of them if fewer)."""
    if count <= wanted:
        return np.arange(count)
    return np.sort(rng.choice(count, wanted, replace=False))


def batches(indices: np.ndarray, batch_size: int, fixed: bool) -> list[tuple[np.ndarray, int]]:
    """Consecutive batches and how many new samples each holds; with a fixed batch size the last
    one is filled up by cycling `indices` (repeats that are not counted again)."""
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        count = len(chunk)
        if fixed and count < batch_size:
            chunk = np.resize(np.concatenate([chunk, indices]), batch_size)
        out.append((chunk, count))
    return out


@dataclasses.dataclass
class Samples:
    """Per-sample rows ready to be batched.

    arrays[name] is [N, ...] (sample axis first); in a feed the rows are stacked on `axes[name]`
    (default 0), or, where `unbatched`, a feed holds a single row without a batch axis. `constants`
    go unchanged into every feed. `collate`, if given, builds a feed from sample indices instead
    (text: padding within the feed).
    """

    count: int
    groups: np.ndarray
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    axes: dict[str, int] = dataclasses.field(default_factory=dict)
    constants: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    unbatched: bool = False
    collate: Callable[[np.ndarray], Feed] | None = None

    def feed(self, indices: np.ndarray) -> Feed:
        if self.collate is not None:
            feed = self.collate(indices)
        elif self.unbatched:
            feed = {name: values[int(indices[0])] for name, values in self.arrays.items()}
        else:
            feed = {name: np.ascontiguousarray(np.moveaxis(values[indices], 0, self.axes.get(name, 0)))
                    for name, values in self.arrays.items()}
        feed.update(self.constants)
        return feed


def batch_size_for(specs: Sequence[InputSpec], names: Sequence[str], options: CalibrationOptions,
                   axes: dict[str, int] | None = None) -> tuple[int, bool]:
    """(samples per feed, fixed?) from the batch axes of the named inputs."""
    axes = axes or {}
    fixed = set()
    for spec in specs:
        if spec.name in names and spec.dims:
            axis = axes.get(spec.name, 0)
            if axis < len(spec.dims) and spec.dims[axis] is not None:
                fixed.add(spec.dims[axis])
    if len(fixed) > 1:
        raise CalibrationError(f"model inputs {', '.join(names)} have different fixed batch sizes "
                               f"{sorted(fixed)}")
    if fixed:
        return fixed.pop(), True
    return options.batch_size, False


def split_and_batch(samples: Samples, specs: Sequence[InputSpec], options: CalibrationOptions,
                    where: str, batch: tuple[int, bool] | None = None,
                    sequential: bool = False) -> tuple[CalibrationSet, bool]:
    """Splits samples (by group where there are enough groups), batches and checks the feeds.

    Returns the set (description still to be written by the caller) and whether the split was by group.
    """
    rng = np.random.default_rng([options.seed, 1])
    mask, by_group = choose_holdout(samples.groups, options.holdout_fraction, rng)
    if samples.unbatched:
        size, fixed = 1, True
    else:
        size, fixed = batch or batch_size_for(specs, list(samples.arrays), options, samples.axes)
    parts = []
    for side in (False, True):
        indices = np.flatnonzero(mask == side)
        indices = indices[np.random.default_rng([options.seed, 2, int(side)]).permutation(len(indices))]
        feeds, counts = [], []
        for chunk, count in batches(indices, size, fixed):
            feeds.append(check_feed(samples.feed(chunk), specs, where))
            counts.append(count)
        parts.append((feeds, counts))
    (optimise, optimise_counts), (holdout, holdout_counts) = parts
    result = CalibrationSet(optimise, holdout, "", sequential, optimise_counts, holdout_counts)
    if by_group:
        result.holdout_groups = sorted(int(g) for g in np.unique(np.asarray(samples.groups)[mask]))
    return result, by_group


def split_feeds(feeds: list[Feed], groups: Sequence, counts: list[int], specs: Sequence[InputSpec],
                options: CalibrationOptions, where: str,
                sequential: bool = False) -> tuple[CalibrationSet, bool]:
    """Splits ready-made feeds (by group where there are enough groups, else feed by feed)."""
    feeds = [check_feed(feed, specs, f"{where} feed {index}") for index, feed in enumerate(feeds)]
    rng = np.random.default_rng([options.seed, 1])
    mask, by_group = choose_holdout(np.asarray(groups), options.holdout_fraction, rng,
                                    np.asarray(counts), unit="feed")
    optimise, holdout = np.flatnonzero(~mask), np.flatnonzero(mask)
    result = CalibrationSet([feeds[i] for i in optimise], [feeds[i] for i in holdout], "", sequential,
                            [counts[i] for i in optimise], [counts[i] for i in holdout])
    return result, by_group


def split_note(result: CalibrationSet, by_group: bool, unit: str) -> str:
    """'(192 optimise, 64 hold-out, split by image)' for descriptions."""
    how = f", split by {unit}" if by_group else ""
    return f"({result.n_optimise} optimise, {result.n_holdout} hold-out{how})"


def feed_count(feed: Feed, specs: Sequence[InputSpec]) -> int:
    """Samples in a feed: dim 0 of the first input whose dim 0 is dynamic, else of the first
    input with an axis, else 1."""
    ranked = [spec for spec in specs if spec.name in feed and np.ndim(feed[spec.name]) >= 1]
    for spec in ranked:
        if spec.dims is None or (spec.dims and spec.dims[0] is None):
            return int(np.shape(feed[spec.name])[0])
    return int(np.shape(feed[ranked[0].name])[0]) if ranked else 1


def is_sequence_model(specs: Sequence[InputSpec]) -> bool:
    """Silero-style sequence model: inputs exactly input [T, W], h, c (float)."""
    by_name = {spec.name: spec for spec in specs}
    return (set(by_name) == {"input", "h", "c"}
            and all(by_name[name].dtype.kind == "f" for name in by_name)
            and by_name["input"].rank in (None, 2))


def is_stateful_model(specs: Sequence[InputSpec]) -> bool:
    """Silero-style stateful model: inputs exactly input, state (float) and sr (int)."""
    by_name = {spec.name: spec for spec in specs}
    return (set(by_name) == {"input", "state", "sr"} and by_name["input"].dtype.kind == "f"
            and by_name["state"].dtype.kind == "f" and by_name["sr"].dtype.kind in "iu")


def report(progress: Progress | None, done: int, total: int, label: str) -> None:
    if progress is not None:
        progress(done, total, label)
