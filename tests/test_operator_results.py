"""How the operator reads a Job's results from the store: absent, invalid and unreadable are three answers."""

import pytest

from modelfleet.controller import read_result
from modelfleet.errors import RetryableError


def test_an_absent_result_is_none(tmp_path):
    assert read_result(f"file://{tmp_path}") is None


def test_an_invalid_result_is_none(tmp_path):
    (tmp_path / "result.json").write_text('{"not": "a result"}')
    assert read_result(f"file://{tmp_path}") is None


def test_a_store_that_cannot_be_read_is_retried_not_taken_for_a_missing_result(tmp_path):
    (tmp_path / "result.json").mkdir()  # an I/O error on read (EISDIR), as a broken mount would give
    with pytest.raises(RetryableError, match="result.json cannot be read"):
        read_result(f"file://{tmp_path}")
