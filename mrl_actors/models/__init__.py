"""Models: the built-in families, where a spec's model lives (`hub`), loading and saving
checkpoints (`load`), and weights versions through the run's blob store (`weights`)."""
