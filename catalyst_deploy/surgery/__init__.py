"""Channel surgery: torch-pruning's dependency graph, what a cut removes, and how much it saves.

`graph.ChannelGraph` numbers every prunable channel of a model's coupled channel groups and makes
plans and trial cuts; `plan` applies, saves and rebuilds a plan (`plan.json`, no pickle);
`allocation.Budget` decides how many channels each group may lose for a target; `macs` is the one MAC
counter. `groups` is how the graph finds its groups; `attention` makes the heads of an attention module a
group, and `attention_modules` holds the head-prunable stand-ins for torchvision's attention.

May import the layers below it (docs/architecture.md): `inputs`, `render`, the settings layer, `errors`,
`atomic` (it uses only the last two), torch, torchvision and torch-pruning. Never `exporters` or anything
above: a method, a benchmark, the run or the interface.
"""
