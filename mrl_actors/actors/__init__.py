"""Long-lived actors. Actors share events, never imports of each other: each folds what it reads.

Lockstep (`[run] mode = "lockstep"`, for bitwise and paper-faithful comparisons): one actor per
policy, `policy.PolicyActor`, samples, waits for its peers and learns, in turn.

Asynchronous (`mode = "async"`, the default): per policy one learner and `run.rollout_replicas`
rollout actors that meet only in the log. Entry points a node calls, by role (each actor connects
as its policy's user; `log` is that connection):

- `roles.run_learner(log, spec, policy_name, run_dir, *, device="cpu", opts, task_status)`:
  restores the learner from its newest stored checkpoint plus the log's tail, publishes weights
  (`WeightsPublished`) and steps until `run.steps` (`learner.LearnerActor`);
- `roles.run_rollout(log, spec, policy_name, replica, run_dir, *, device="cpu", opts,
  task_status)`: samples prompt batches `k % rollout_replicas == replica` with the newest verified
  weights, within `run.max_staleness` versions (`rollout.RolloutActor`);
- `roles.run_policy_async(...)`: both, for one policy in one task group (what `mrl run` hosts).

`roles.ROLES` maps a slot's role to its entry point (`host_learner`, `host_rollout`) for a
node. What every actor shares lives beside them: `follow.Follower` (its one read of the log),
`step.StepTail` (finishing a learner step), `state` (the pure fold), `runtime` (the torch side),
`replay` (exact replay), `warmstart`, `shares` (rollout batches by slot), `options`.
"""
