"""mrl-actors: Mutual Reinforcement Learning as an event-sourced actor system.

Heavy modules (torch, transformers, nats) are imported late by the modules that need them, so
`import mrl_actors` and `mrl --help` stay fast.
"""

__version__ = "0.1.0"
