"""Long-lived actors: the policy actor (and, on the roadmap, the MWRA allocator).

Actors share events, never imports of each other: each folds what it reads from the log.
"""
