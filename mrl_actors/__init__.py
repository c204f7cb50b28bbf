"""mrl-actors: Mutual Reinforcement Learning as an event-sourced actor system.

The package is laid out in wings, in floor order: a module imports only from its own wing or from
wings below it (`make lint` checks this with import-linter; `docs/architecture.md` walks the main
flows file by file).

| wing        | owns                                                                          |
|-------------|-------------------------------------------------------------------------------|
| `cli/`      | `mrl` and `mrl-node`: argument parsing, output, exit codes                    |
| `run/`      | a run: one machine (`runner`), a node's hosting (`node`), placement, its start |
| `actors/`   | the long-lived actors (policy, learner, rollout), their folds and runtimes     |
| `spec.py`   | experiment specs: TOML decoded into frozen, documented Structs                 |
| `probes/`   | the sharing probes, as pure functions, and their registry                      |
| `rollout/`  | rollout engines (Hugging Face, vLLM)                                           |
| `grpo/`     | the GRPO learner at parity with TRL                                            |
| `thl/`      | the tokenizer heterogeneity layer                                              |
| `mwra/`     | the slot allocator: a pure fold and rule, and its actor                        |
| `report/`   | summaries, reports, statistics, Prometheus metrics, TensorBoard                |
| `models/`   | model families, loading and saving, weights versions                          |
| `tasks/`    | tasks and their verifiers                                                     |
| `see/`      | the log (JetStream) and everything NATS: server, configs, users, blobs        |
| ground      | `events.py` (the typed events), `checks.py`, `logs.py`, `errors.py`           |

Heavy modules (torch, transformers, nats) are imported late by the CLI, so `import mrl_actors`
and `mrl --help` stay fast.
"""

__version__ = "0.1.0"
