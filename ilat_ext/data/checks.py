"""Argument checks the datasets share: item indices, seeds and probabilities.

Each returns the value as a plain Python number or raises with the argument's name, so a bad
config fails where it is read rather than deep inside a DataLoader worker.

    >>> check_item_index(-1, 5, "ToyFaces")
    4
    >>> check_item_index(5, 5, "ToyFaces")
    Traceback (most recent call last):
    ...
    IndexError: index 5 out of range for ToyFaces of length 5
"""
import numpy as np


class DataFilesMissing(FileNotFoundError):
    """A dataset's files are not where its config or its class says; the message names the path and
    what to put there. main.py builds the data before it creates a run folder, and reports this
    error in one line with exit code 2."""


def check_item_index(index, length: int, owner: str) -> int:
    """`index` of a dataset of `length` items as an int in [0, length); negative indices count from
    the end, as for a list. TypeError for a non-integer, IndexError naming `owner` out of range."""
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"index must be an integer, got {index!r}")
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for {owner} of length {length}")
    return index + length if index < 0 else index


def check_seed(name: str, value) -> int:
    """A non-negative integer (a seed, stream or index into a seeded stream) as an int."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_probability(name: str, value) -> float:
    """A number in [0, 1] as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value
