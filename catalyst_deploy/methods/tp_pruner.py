"""torch-pruning's GroupNormPruner over the groups the channel graph cuts: what DepGraph, group lasso and
network slimming regularize with (methods/depgraph.py, methods/baselines.py).

Its own dependency graph is traced the way the channel graph's is (ShuffleNet's shuffle as one layer,
surgery/shuffle_modules.py), and it leaves alone every group the channel graph leaves whole (the head,
--ignore, groups it cannot cut safely), the attention heads' qkv rows (torch-pruning would cut them one row
at a time; heads are the channel graph's units), and the groups through grouped convolutions: torch-pruning
1.6's `GroupNormPruner.regularize` fails on them (IndexError: it shortens the penalty to one conv block and
then indexes it with every position). Those groups get no penalty and are ranked by the method's
importance like any other.
"""

from __future__ import annotations

from torch import nn

from catalyst_deploy.surgery.shuffle_modules import ChannelShuffle, custom_pruners, opaque_shuffles
from catalyst_deploy.surgery.units import Interleaved


def group_norm_pruner(graph, model: nn.Module, pruner: str = "GroupNormPruner", **options):
    """A `tp.pruner.GroupNormPruner` (or another of torch-pruning's pruners, by class name: BNScalePruner) on
    `model` (the graph's live model or a copy of it); `options` go to it."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    kept = {graph.root_name(g) for g in range(len(graph.sizes)) if not isinstance(graph.units[g], Interleaved)}
    example = graph.example.detach().to(next(model.parameters()).device)
    roots = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)
    customized = custom_pruners(model)
    with opaque_shuffles():
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, customized_pruners=customized)
    # every layer whose outputs a left-out group cuts (a transformer's embedding width can be rooted at any)
    ignored = [dep.target.module for g in dg.get_all_groups(root_module_types=roots)
               if names.get(g[0].dep.target.module) not in kept for dep, _ in g
               if dg.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, nn.Module)]
    ignored += [model.get_submodule(graph.heads(g).qkv) for g in range(len(graph.sizes)) if graph.heads(g) is not None]
    ignored += [m for m in model.modules() if isinstance(m, ChannelShuffle)]
    with opaque_shuffles():
        return getattr(tp.pruner, pruner)(model, example, ignored_layers=ignored, root_module_types=roots,
                                          customized_pruners=customized, **options)
