"""Typed errors. The CLI turns each into a one-line message and an exit code (1: the job failed, 2: bad usage)."""


class CatalystDeployError(Exception):
    """Base class: something the user can act on; printed as one line, exit code 1."""

    exit_code = 1


class UsageError(CatalystDeployError):
    """Bad input (a spec, a path, a number out of range): exit code 2."""

    exit_code = 2


class PartialFailure(CatalystDeployError):
    """The model was pruned and written, but an export or the benchmark failed (exit code 1)."""


class MissingDependency(CatalystDeployError):
    """An optional package or piece of hardware is missing; the message names the pip extra."""

    exit_code = 1


class ExportValidationError(CatalystDeployError):
    """An exported artifact disagrees with PyTorch on the same input by more than the tolerance."""

    def __init__(self, fmt: str, max_abs_diff: float, atol: float):
        self.fmt, self.max_abs_diff, self.atol = fmt, max_abs_diff, atol
        super().__init__(
            f"{fmt} export does not match PyTorch: max abs diff {max_abs_diff:.3g} > tolerance {atol:.3g}"
        )


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
