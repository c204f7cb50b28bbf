"""`mrl run` with the MWRA allocator on one machine: how many CPU slots its one node offers."""

from __future__ import annotations

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.spec import parse_spec

BASE = """
[run]
name = "r"
{run}
[placement]
allocator = "mwra"
{placement}
[[policies]]
name = "a"
model = "gpt2"
learner_slots = 2
[[policies]]
name = "b"
model = "gpt2"
"""


def test_the_node_offers_a_slot_per_learner_rank_and_the_rollout_slots() -> None:
    default = parse_spec(BASE.format(run="rollout_replicas = 2", placement=""))
    assert default.run.mode == "async"  # the allocator's mode, by default
    assert default.local_slot_count() == 3 + 2 * 2  # learners 2 + 1, two replicas per policy
    given = parse_spec(BASE.format(run="", placement="local_rollout_slots = 5"))
    assert given.local_slot_count() == 3 + 5


@pytest.mark.parametrize(
    ("run", "placement", "field"),
    [
        ("", "local_rollout_slots = 1", "placement.local_rollout_slots: must be at least 2"),
        ("", "local_rollout_slots = -1", "placement.local_rollout_slots"),
        ('processes = "per_policy"', "", "run.processes: must be 'one' with placement.allocator"),
        ('mode = "lockstep"', "", "placement.allocator: must be 'static' unless run.mode"),
    ],
)
def test_a_layout_the_allocator_cannot_host_is_refused_by_name(
    run: str, placement: str, field: str
) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_spec(BASE.format(run=run, placement=placement))
