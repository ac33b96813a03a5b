"""Calibration and evaluation data: .npz files with `inputs` and integer `labels`."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import TensorSpec
from modelfleet.errors import DatasetError


@dataclass(frozen=True)
class LabelledData:
    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


def load_npz(path: Path, uri: str, input_spec: TensorSpec, *, need_labels: bool) -> LabelledData:
    """Load and check a dataset against the model's input; every problem names the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # numpy raises many types for a file that is not an npz
        raise DatasetError(f"{uri}: not a readable .npz file: {e}") from e
    if "inputs" not in arrays:
        raise DatasetError(f"{uri}: missing the 'inputs' array (found: {sorted(arrays) or 'none'})")
    inputs = arrays["inputs"]
    if len(inputs) == 0:
        raise DatasetError(f"{uri}: the dataset is empty")
    expected = tuple(input_spec.shape[1:])
    if tuple(inputs.shape[1:]) != expected:
        raise DatasetError(
            f"{uri}: samples have shape {list(inputs.shape[1:])}, the model input {input_spec.name!r} expects {list(expected)}"
        )
    inputs = inputs.astype(input_spec.dtype, copy=False)
    labels = arrays.get("labels")
    if labels is None:
        if need_labels:
            raise DatasetError(f"{uri}: missing the 'labels' array needed to measure accuracy")
        return LabelledData(inputs, np.zeros(0, dtype=np.int64))
    if labels.ndim != 1 or len(labels) != len(inputs):
        raise DatasetError(f"{uri}: 'labels' must be one integer per sample ({len(inputs)}), got shape {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{uri}: 'labels' must be integers, got {labels.dtype}")
    if labels.min() < 0:
        raise DatasetError(f"{uri}: 'labels' holds negative class indices")
    return LabelledData(inputs, labels.astype(np.int64))


def check_labels_fit(data: LabelledData, uri: str, num_classes: int) -> None:
    """Labels must index the model's outputs; anything else is a mislabelled dataset."""
    if len(data.labels) and data.labels.max() >= num_classes:
        raise DatasetError(
            f"{uri}: label {int(data.labels.max())} is out of range for a model with {num_classes} outputs"
        )
