"""The trial contract: the names and rules every layer of a sweep shares, defined once.

A trial is created by the searcher (`sweeps.run.search`), trained by `trainables`, recorded by
the tracker (`sweeps.tracking.callback`), counted by `sparsesweep status` and compared by `analysis`.
What they must agree on lives here, typed, and nowhere else:

- `contract.trial`: the trial's identity and factors (`TrialMeta`), the Tune config that
  carries it, and the keys of the results a trial reports (`ResultKey`);
- `contract.outcome`: the status vocabulary and the one function deciding a trial's outcome;
- `contract.names`: metric names and directions, MLflow tag names and roles;
- `contract.arms`: the method registry, the arm grammar (`rigl+sparseopt+cap`), the
  sparse-option rules arms and configs share, and each arm's baseline;
- `contract.selection`: the one rule that picks a cell's best learning rate.

This package sits beneath `sparseopt`, `trainables`, `sweeps` and `analysis` and imports
nothing but the standard library, so `analysis` (no torch, no ray) can read what the
trainables write.
"""
