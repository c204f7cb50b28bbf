"""The few exceptions this package raises on purpose.

Each message says what was wrong, where (file, field, event id, stream sequence) and what to do.
Catch `MrlError` at process boundaries (the CLI, an actor's supervisor); catch a subclass where a
caller can do something specific about it.
"""


class MrlError(Exception):
    """Base of every error raised on purpose by mrl-actors."""


class ConfigError(MrlError, ValueError):
    """A spec or config file is malformed: raised at load time, names the file and the field."""


class EventDecodeError(MrlError):
    """Bytes that are not a valid event: garbage, unknown tag, wrong type, NaN, oversized.

    Consumers turn it into a `DeadLettered` event and carry on; it never kills an actor.
    """


class LogError(MrlError):
    """The event log (JetStream) refused or lost an operation: a failed ack, a stream missing."""


class WriterConflictError(LogError):
    """Two writers claimed the same subject (expected-last-subject-sequence did not match)."""


class BlobIntegrityError(MrlError):
    """A blob's content hash does not match the hash its event carries."""


class ServerError(MrlError):
    """The embedded nats-server could not be started, reached or stopped."""


class TokenizerError(MrlError):
    """A tokenizer cannot be loaded, or cannot represent a text (lossy pair, unknown bytes)."""


class EngineUnavailableError(MrlError):
    """A rollout engine was asked for but its backend is not installed (e.g. vLLM on CPU)."""


class WeightsError(MrlError):
    """Weights or a checkpoint from the log that cannot be used: altered, missing, or not the
    announced ones (the loaded model's checksum differs from the event's)."""
