"""What a run shows: its summary and HTML report from the log, the statistics comparisons rest
on, Prometheus metrics and TensorBoard scalars."""
