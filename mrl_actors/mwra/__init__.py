"""MWRA, the slot allocator: a pure fold over the log whose only output is `SlotsAssigned`.

`state.evolve` folds events, `rule.decide` turns the state and the time into the next
assignment, `replay.check` proves a log's decisions are what the rule makes of that log.
"""

from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.rule import decide
from mrl_actors.mwra.state import MwraState, evolve, fold

__all__ = ["MwraConfig", "MwraState", "decide", "evolve", "fold"]
