"""The [run] fields of asynchronous runs: a spec that leaves the mode out runs async (lockstep is
asked for by name), bad values are named."""

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


def test_a_spec_that_does_not_say_runs_async_with_one_replica() -> None:
    run = parse_spec(BASE.format(run="")).run
    assert (run.mode, run.rollout_replicas, run.max_staleness) == ("async", 1, 1)


def test_lockstep_is_an_explicit_option() -> None:
    assert parse_spec(BASE.format(run='mode = "lockstep"')).run.mode == "lockstep"


def test_a_logged_spec_without_a_mode_reads_as_the_mode_its_run_recorded() -> None:
    # a log written while lockstep was the default: `RunStarted.run_mode` says "lockstep"
    assert parse_spec(BASE.format(run=""), mode="lockstep").run.mode == "lockstep"
    assert parse_spec(BASE.format(run='mode = "async"'), mode="lockstep").run.mode == "async"


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


def test_a_multi_rank_learner_is_read_and_given_to_mwra_as_one_unit() -> None:
    spec = parse_spec(BASE.format(run='mode = "async"') + "learner_slots = 2\nthreads = 4\n")
    assert (spec.policies[0].learner_slots, spec.policies[0].threads) == (2, 4)
    assert spec.mwra_config().learners("a") == 2


@pytest.mark.parametrize(
    ("run", "extra", "field"),
    [
        ('mode = "lockstep"', "learner_slots = 2\n", r"policies\[0\]\.learner_slots"),  # one actor
        ('mode = "async"', "learner_slots = 0\n", "learner_slots"),
        ('mode = "async"', "learner_slots = 2\n[mwra]\nlearner_slots = { a = 3 }\n", "mwra"),
        (
            'mode = "async"',
            "learner_slots = 2\n"
            '[[placement.slots]]\nnode = "n1"\nslot = "cpu:0"\npolicy = "a"\n'
            '[[placement.slots]]\nnode = "n2"\nslot = "cpu:0"\npolicy = "a"\n'
            '[[placement.slots]]\nnode = "n2"\nslot = "cpu:1"\npolicy = "a"\nrole = "rollout"\n',
            "all on one node",
        ),
    ],
)
def test_bad_learner_slots_are_refused_by_name(run: str, extra: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_spec(BASE.format(run=run) + extra)
