"""catalyst-deploy: structured pruning with the Catalyst regularizer, export, and latency benchmarks.

The public entry points live in :mod:`catalyst_deploy.api`. Importing this package is cheap: torch
and the runtimes are imported by the functions that need them.
"""

__version__ = "0.1.0"
