"""Presentation: every terminal table, markdown file and plot the tool produces.

    progress  rich progress bars for training phases
    prune     the prune report as a terminal summary and report.md
    bench     the benchmark report as a terminal table and bench.md
    env       the environment report
    check     the check report (groups, layers left alone, the trial cut)
    plots     bifurcation.png and latency.png (matplotlib's object API: no global backend switch)

It renders what it is given (reports, dicts, numbers) and asks nothing of the run: may import the settings
layer (the typed report), `errors` and `atomic` only (docs/architecture.md).
"""
