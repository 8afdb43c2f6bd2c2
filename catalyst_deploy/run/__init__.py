"""The run: what happens between the command line and the files a prune run leaves behind.

`pipeline.PruneRun` sets a run up (data, model, channel graph, budget, preflight checks) and drives its
steps; `phases` holds the training phases (pretrain, regularize, cut, recover) and drives any pruning
method through `methods.base.PruningMethod` only; `train` is the training loop; `checkpoint` and
`rundir` (with `marker` and `folderlock`) keep a run resumable and its folder safe, and `resume` is where
a resumed run continues and its one restore; `outputs` and `deploy`
write, export and benchmark what the cut produced; `distributed` and `ranks` run all of it under torchrun;
`latency_loop` repeats a run until its exported files meet a `--target-latency`. `check` is the dry run
(`catalyst-deploy check`): what a model offers to pruning, without data or training.

May import every layer below it (docs/architecture.md): `latency`, `methods`, `bench`, `exporters`,
`surgery`, `inputs`, `render`, the settings layer, `errors`, `atomic`. Only `api` imports it.
"""
