"""`[run] malloc_mmap_threshold_mib`: the spec bounds it, and the process setting takes it."""

from __future__ import annotations

import platform

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.models.heap import set_mmap_threshold
from mrl_actors.spec import RunSection


def test_the_spec_bounds_the_threshold_to_what_glibc_accepts() -> None:
    assert RunSection(name="r").malloc_mmap_threshold_mib == 0  # glibc's dynamic default
    assert RunSection(name="r", malloc_mmap_threshold_mib=32).malloc_mmap_threshold_mib == 32
    for bad in (-1, 33):
        with pytest.raises(ConfigError, match="malloc_mmap_threshold_mib"):
            RunSection(name="r", malloc_mmap_threshold_mib=bad)


def test_zero_leaves_the_heap_alone_and_too_large_is_refused() -> None:
    assert set_mmap_threshold(0) is False
    with pytest.raises(ValueError, match="at most 32"):
        set_mmap_threshold(33)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_threshold() -> None:
    assert set_mmap_threshold(4) is True
    assert set_mmap_threshold(32) is True
