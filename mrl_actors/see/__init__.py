"""The Shared Experience Exchange: one run's JetStream stream of typed events.

`stream` appends and reads (`EventLog`), `record` is what every fold takes (`Record`), `port` is
the typed interface actors and replay use (`LogPort`), `writer` owns a source's subjects
(`OwnedWriter`), `deadletter` is how every reader handles a bad message (`DeadLetters`), and
`consumer` applies events exactly once through a durable consumer (`Consumer`).
Import from `mrl_actors.log`, which re-exports the public names.
"""
