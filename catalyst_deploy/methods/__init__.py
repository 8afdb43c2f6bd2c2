"""Pruning methods: Catalyst and the baselines behind one interface (`base.PruningMethod`), listed in the
method table (`catalyst_deploy.method_table.METHODS`), built from the run settings here:

    method = make_method(cfg)        # cfg: config.PruneConfig; the class reads what it needs from it

May import the layers below it (docs/architecture.md): `bench`, `exporters`, `surgery`, `inputs`, `render`,
the settings layer, `errors`, `atomic`. Never `latency`, `run`, `api` or `cli`.
"""

from __future__ import annotations

import importlib

from catalyst_deploy.method_table import get_method


def method_class(name: str):
    module_name, class_name = get_method(name).entry.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_method(cfg):
    """The pruning method `cfg.method` names, built from the run settings `cfg` (a config.PruneConfig)."""
    return method_class(cfg.method).from_config(cfg)
