"""Channel surgery: torch-pruning's dependency graph, what a cut removes, and how much it saves.

`graph.ChannelGraph` numbers every prunable channel of a model's coupled channel groups and makes
plans and trial cuts; `plan` applies, saves and rebuilds a plan (`plan.json`, no pickle);
`allocation.Budget` decides how many channels each group may lose for a target; `macs` is the one MAC
counter.

May import the layers below it (docs/architecture.md): `inputs`, `render`, the settings layer, `errors`,
`atomic` (it uses only the last two), torch and torch-pruning. Never `exporters` or anything above: a method,
a benchmark, the run or the interface.
"""
