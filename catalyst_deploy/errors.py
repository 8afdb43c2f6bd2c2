"""Typed errors. The CLI turns each into a one-line message and an exit code (1: the job failed, 2: bad usage)."""

import contextlib


class CatalystDeployError(Exception):
    """Base class: something the user can act on; printed as one line, exit code 1."""

    exit_code = 1


class UsageError(CatalystDeployError):
    """Bad input (a spec, a path, a number out of range): exit code 2."""

    exit_code = 2


class PartialFailure(CatalystDeployError):
    """The model was pruned and written, but an export or the benchmark failed (exit code 1)."""


class Interrupted(CatalystDeployError):
    """SIGINT / SIGTERM stopped the job; the message says what is kept and how to continue. Exit code 128 +
    the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        import signal

        super().__init__(message)
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the process is (`raising_on_stop_signals`), so that every `finally` and
    `with` block on the way out runs: temp folders are removed, atomic writes leave no temp file."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@contextlib.contextmanager
def raising_on_stop_signals():
    """SIGINT and SIGTERM raise StopSignal inside this block (SIGTERM would otherwise end the process at once,
    skipping every cleanup); yields a list that gets the name of each signal that came (a caller may swallow
    the exception: Typer turns a KeyboardInterrupt into exit code 130). Does nothing outside the main
    thread, where handlers cannot be set."""
    import signal

    received: list[str] = []

    def stop(signum, _frame):
        received.append(signal.Signals(signum).name)
        raise StopSignal(received[-1])

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread
            pass
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
