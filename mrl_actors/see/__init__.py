"""The Shared Experience Exchange: one run's JetStream stream of typed events.

`stream` appends and reads (`EventLog`, `Record`), `writer` owns a source's subjects
(`OwnedWriter`), `consumer` applies events exactly once and dead-letters bad ones (`Consumer`).
Import from `mrl_actors.log`, which re-exports the public names.
"""
