"""The [run] fields of asynchronous runs: defaults keep old specs lockstep, bad values are named."""

from __future__ import annotations

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.spec import parse_spec

BASE = """
[run]
name = "r"
{run}
[[policies]]
name = "a"
model = "gpt2"
"""


def test_a_spec_that_does_not_say_runs_lockstep_with_one_replica() -> None:
    run = parse_spec(BASE.format(run="")).run
    assert (run.mode, run.rollout_replicas, run.max_staleness) == ("lockstep", 1, 1)


def test_async_fields_are_read() -> None:
    text = BASE.format(run='mode = "async"\nrollout_replicas = 3\nmax_staleness = 0')
    run = parse_spec(text).run
    assert (run.mode, run.rollout_replicas, run.max_staleness) == ("async", 3, 0)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('mode = "fast"', "run.mode"),
        ("rollout_replicas = 0", "run.rollout_replicas"),
        ("max_staleness = -1", "run.max_staleness"),
    ],
)
def test_bad_async_fields_are_refused_by_name(line: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_spec(BASE.format(run=line))
