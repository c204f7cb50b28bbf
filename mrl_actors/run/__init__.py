"""Runs: `mrl run` on one machine (`runner`), `mrl-node` hosting on several (`node`), where each
actor goes (`placement`), what a run's start records (`start`), and counterfactual replay."""
