"""Calibration and evaluation data: .npz files with one array per model input and, for metric top1, integer
`labels`. A model with one input may name its array `inputs`. Samples lie along every array's first axis: an
input with a batch axis holds each sample without it, one without (a 0-d scalar, a recurrent state whose batch
axis is not the first) holds the whole tensor per sample."""

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import TensorSpec
from modelfleet.errors import DatasetError, UnsupportedModel

# The most one array may declare: the worker holds the data in memory, and an .npz is a zip file
# whose header can promise far more than its few compressed bytes.
MAX_ARRAY_BYTES = 4 << 30
SINGLE_INPUT = "inputs"  # the array of a model with one input may go by this name


@dataclass(frozen=True)
class Inputs:
    """The model's inputs for N samples: one array per input name, in the graph's order."""

    arrays: dict[str, np.ndarray]
    batched: dict[str, bool]  # whether the model input has a batch axis: calls may then stack samples

    @classmethod
    def single(cls, name: str, array: np.ndarray) -> "Inputs":
        """One input with a batch axis."""
        return cls({name: array}, {name: True})

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def stackable(self) -> bool:
        """Whether one call may take several samples: every input has a batch axis."""
        return all(self.batched.values())

    def take(self, count: int) -> "Inputs":
        return self.window(0, count)

    def window(self, start: int, stop: int) -> "Inputs":
        return Inputs({name: array[start:stop] for name, array in self.arrays.items()}, self.batched)

    def feed(self, start: int, stop: int, size: int | None = None) -> dict[str, np.ndarray]:
        """What one call is fed for samples start..stop, filled up to `size` samples with copies of the last (a
        fixed batch); an input without a batch axis is fed its one sample's tensor."""
        feed = {}
        for name, array in self.arrays.items():
            if self.batched[name]:
                feed[name] = padded(array[start:stop], size) if size else array[start:stop]
            else:
                if stop - start != 1:
                    raise ValueError(f"input {name!r} has no batch axis: one sample a call, not {stop - start}")
                feed[name] = np.asarray(array[start])  # a 0-d element is a numpy scalar, which runtimes refuse
        return feed

    def feeds(self, size: int, exact: bool) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Consecutive feeds of at most `size` samples (one when an input has no batch axis), each with how many
        of its samples are real; with `exact` every feed has exactly `size` (see `batches`)."""
        size = size if self.stackable else 1
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield self.feed(start, stop, size if exact else None), stop - start

    def only(self) -> np.ndarray:
        """The one input's samples, for what takes a single tensor (the edge converters, a torch source)."""
        if len(self.arrays) != 1 or not self.stackable:
            names = ", ".join(f"{n}{'' if b else ' (no batch axis)'}" for n, b in self.batched.items())
            raise UnsupportedModel(f"this step takes one input with a batch axis; the model has {names}",
                                   reason="MultipleInputs")
        return next(iter(self.arrays.values()))


@dataclass(frozen=True)
class LabelledData:
    inputs: Inputs
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


def load_npz(path: Path, uri: str, specs: list[TensorSpec], *, need_labels: bool) -> LabelledData:
    """Load and check a dataset against the model's inputs; every problem names the file."""
    names = [spec.name for spec in specs]
    wanted = [*names, "labels"] + ([SINGLE_INPUT] if len(specs) == 1 else [])
    arrays, found = _read_arrays(path, uri, wanted)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        key = spec.name if spec.name in arrays or len(specs) > 1 else SINGLE_INPUT
        if key not in arrays:
            what = f"the {SINGLE_INPUT!r} array" if len(specs) == 1 else f"the array of input {spec.name!r}"
            raise DatasetError(f"{uri}: missing {what} (found: {found or 'none'})")
        inputs[spec.name] = _checked_input(arrays[key], key, spec, uri)
    counts = {name: len(array) for name, array in inputs.items()}
    if len(set(counts.values())) > 1:
        raise DatasetError(f"{uri}: the inputs hold different numbers of samples: {counts}")
    data = Inputs(inputs, {spec.name: spec.batched for spec in specs})
    if not need_labels:  # calibration, and metric fidelity: labels (class indices or not) are not read
        return LabelledData(data, np.zeros(0, dtype=np.int64))
    labels = arrays.get("labels")
    if labels is None:
        raise DatasetError(f"{uri}: missing the 'labels' array that metric top1 needs to measure accuracy "
                           "(metric fidelity compares with the fp32 baseline's outputs and needs none)")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DatasetError(f"{uri}: 'labels' must be one integer per sample ({len(data)}), got shape {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{uri}: 'labels' must be integers, got {labels.dtype}")
    if labels.min() < 0:
        raise DatasetError(f"{uri}: 'labels' holds negative class indices")
    return LabelledData(data, labels.astype(np.int64))


def _checked_input(array: np.ndarray, key: str, spec: TensorSpec, uri: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DatasetError(f"{uri}: {key!r} must hold numbers, got {array.dtype}")
    if array.ndim == 0:
        raise DatasetError(f"{uri}: {key!r} must hold samples along its first axis, got a single value")
    if len(array) == 0:
        raise DatasetError(f"{uri}: the dataset is empty")
    expected = tuple(spec.shape[1:] if spec.batched else spec.shape)
    if tuple(array.shape[1:]) != expected:
        raise DatasetError(f"{uri}: samples have shape {list(array.shape[1:])}, the model input {spec.name!r} "
                           f"expects {list(expected)}")
    array = array.astype(spec.dtype, copy=False)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:  # they would reach every output and make accuracy a matter of argmax over NaN
            raise DatasetError(f"{uri}: {key!r} holds {bad} NaN or infinite values")
    return array


def _read_arrays(path: Path, uri: str, wanted: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The `wanted` arrays that are present, once their headers' sizes passed the limit, and the names of every
    array in the file (the others are not read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in wanted:
                if f"{name}.npy" in archive.namelist():
                    with archive.open(f"{name}.npy") as member:
                        shape, dtype = _npy_header(member)
                    declared = math.prod(shape) * dtype.itemsize
                    if declared > MAX_ARRAY_BYTES:
                        raise DatasetError(f"{uri}: '{name}' declares shape {list(shape)} of {dtype} ({declared} bytes), "
                                           f"more than the {MAX_ARRAY_BYTES} bytes a dataset array may hold")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in wanted if name in data.files}, sorted(data.files)
    except DatasetError:
        raise
    except Exception as e:  # zipfile and numpy raise many types for a file that is not an npz
        raise DatasetError(f"{uri}: not a readable .npz file: {e}") from e


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(member)
    return shape, dtype


def check_labels_fit(data: LabelledData, uri: str, num_classes: int) -> None:
    """Labels must index the model's outputs; anything else is a mislabelled dataset."""
    if len(data.labels) and data.labels.max() >= num_classes:
        raise DatasetError(
            f"{uri}: label {int(data.labels.max())} is out of range for a model with {num_classes} outputs"
        )


def batches(inputs: np.ndarray, size: int, exact: bool) -> Iterator[tuple[np.ndarray, int]]:
    """Consecutive batches of at most `size` samples, each with how many of its samples are real.

    With `exact` (a model whose batch dimension is fixed) every batch has exactly `size` samples:
    the last one is filled up with copies of its last sample, whose outputs callers drop.
    """
    for start in range(0, len(inputs), size):
        batch = inputs[start : start + size]
        yield (padded(batch, size) if exact else batch), len(batch)


def padded(batch: np.ndarray, size: int) -> np.ndarray:
    """`batch` filled up to `size` samples with copies of its last one."""
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])
