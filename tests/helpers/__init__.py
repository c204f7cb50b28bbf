"""What several test modules share: specs, a local cluster, trained tokenizers, log readers."""
