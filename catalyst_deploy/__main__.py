"""`python -m catalyst_deploy ...`: the CLI (how torchrun launches it)."""

from catalyst_deploy.cli import main

main()
