"""What a run reads: model specs and files (`models`, with the allowlisted pickle loader `safe_load`
and the small built-in models of `zoo`), and data sets (`data` for specs and loaders, `datasets` for
the split and loader machinery, `readers` for the on-disk formats).

Everything read here is untrusted input: model files go through the allowlist, data files through
readers that check their headers. May import the layers below it (docs/architecture.md): `render`, the
settings layer, `errors`, `atomic` (it uses only the last two), torch and torchvision (timm when installed).
Never `surgery` or anything above.
"""
