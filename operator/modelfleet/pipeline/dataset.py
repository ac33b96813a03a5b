"""Calibration and evaluation data: .npz files with `inputs` and integer `labels` (evaluation with metric
top1 only: calibration and metric fidelity need no labels)."""

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import TensorSpec
from modelfleet.errors import DatasetError

# The most one array may declare: the worker holds the data in memory, and an .npz is a zip file
# whose header can promise far more than its few compressed bytes.
MAX_ARRAY_BYTES = 4 << 30
_ARRAYS = ("inputs", "labels")


@dataclass(frozen=True)
class LabelledData:
    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


def load_npz(path: Path, uri: str, input_spec: TensorSpec, *, need_labels: bool) -> LabelledData:
    """Load and check a dataset against the model's input; every problem names the file."""
    arrays, names = _read_arrays(path, uri)
    if "inputs" not in arrays:
        raise DatasetError(f"{uri}: missing the 'inputs' array (found: {names or 'none'})")
    inputs = arrays["inputs"]
    if not (np.issubdtype(inputs.dtype, np.integer) or np.issubdtype(inputs.dtype, np.floating)):
        raise DatasetError(f"{uri}: 'inputs' must hold numbers, got {inputs.dtype}")
    if inputs.ndim == 0:
        raise DatasetError(f"{uri}: 'inputs' must hold samples along its first axis, got a single value")
    if len(inputs) == 0:
        raise DatasetError(f"{uri}: the dataset is empty")
    expected = tuple(input_spec.shape[1:])
    if tuple(inputs.shape[1:]) != expected:
        raise DatasetError(
            f"{uri}: samples have shape {list(inputs.shape[1:])}, the model input {input_spec.name!r} expects {list(expected)}"
        )
    inputs = inputs.astype(input_spec.dtype, copy=False)
    if np.issubdtype(inputs.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(inputs)))
        if bad:  # they would reach every output and make accuracy a matter of argmax over NaN
            raise DatasetError(f"{uri}: 'inputs' holds {bad} NaN or infinite values")
    if not need_labels:  # calibration, and metric fidelity: labels (class indices or not) are not read
        return LabelledData(inputs, np.zeros(0, dtype=np.int64))
    labels = arrays.get("labels")
    if labels is None:
        raise DatasetError(f"{uri}: missing the 'labels' array that metric top1 needs to measure accuracy "
                           "(metric fidelity compares with the fp32 baseline's outputs and needs none)")
    if labels.ndim != 1 or len(labels) != len(inputs):
        raise DatasetError(f"{uri}: 'labels' must be one integer per sample ({len(inputs)}), got shape {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{uri}: 'labels' must be integers, got {labels.dtype}")
    if labels.min() < 0:
        raise DatasetError(f"{uri}: 'labels' holds negative class indices")
    return LabelledData(inputs, labels.astype(np.int64))


def _read_arrays(path: Path, uri: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """`inputs` and `labels` (when present), once their headers' sizes passed the limit, and the names of
    every array in the file (the others are not read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in _ARRAYS:
                if f"{name}.npy" in archive.namelist():
                    with archive.open(f"{name}.npy") as member:
                        shape, dtype = _npy_header(member)
                    declared = math.prod(shape) * dtype.itemsize
                    if declared > MAX_ARRAY_BYTES:
                        raise DatasetError(f"{uri}: '{name}' declares shape {list(shape)} of {dtype} ({declared} bytes), "
                                           f"more than the {MAX_ARRAY_BYTES} bytes a dataset array may hold")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in _ARRAYS if name in data.files}, sorted(data.files)
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
