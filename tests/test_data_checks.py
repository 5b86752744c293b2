"""The argument checks the datasets share (ilat_ext.data.checks)."""
import doctest

import numpy as np
import pytest

import ilat_ext.data.checks as checks
from ilat_ext.data.checks import check_item_index, check_probability, check_seed


def test_checks_docstring_example():
    failures, attempted = doctest.testmod(checks)
    assert failures == 0 and attempted > 0


def test_item_index_counts_from_the_end_like_a_list():
    items = list(range(5))
    for index in range(-5, 5):
        assert items[check_item_index(index, 5, "X")] == items[index]
    assert check_item_index(np.int64(3), 5, "X") == 3 and type(check_item_index(np.int64(3), 5, "X")) is int
    for bad in (5, -6):
        with pytest.raises(IndexError, match=f"index {bad} out of range for X of length 5"):
            check_item_index(bad, 5, "X")
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="index must be an integer"):
            check_item_index(bad, 5, "X")


def test_seed_and_probability():
    assert check_seed("seed", np.uint8(7)) == 7 and check_probability("p", "0.25") == 0.25
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            check_seed("seed", bad)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        check_probability("p", 1.5)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]"):
        check_probability("p", None)
