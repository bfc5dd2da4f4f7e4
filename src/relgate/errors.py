"""One exception root for everything relgate refuses, each with its exit code.

Exit codes are a contract with users and CI (DESIGN.md):
0 success, 1 a governed "no" (gate failed, evidence did not reproduce, bundle
does not verify, publication refused), 2 bad input or usage, 3 a bug (an
exception relgate did not expect), 130 interrupted, 141 the reader closed
stdout before the output was written (the command itself finished: a
promotion published in full; stderr says with which code).
Messages are one line: what is wrong, then how to fix it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a command a closed pipe killed


class RelgateError(Exception):
    """Root of every error relgate raises on purpose."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the remedy, flattened to a single line."""
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class UsageError(RelgateError):
    """The command line itself is wrong (missing option, conflicting flags)."""


class InputError(RelgateError):
    """An input file is missing, unreadable, or not what it claims to be."""


class JSONFormatError(InputError):
    """A JSON file breaks the strict reading rules (duplicates, NaN, size, depth)."""


class SchemaError(InputError):
    """A record does not match its bundled JSON Schema; the message names the key path."""


class ParamsError(InputError):
    """params.yaml is unreadable, ambiguous, or invalid."""


class ModelError(InputError):
    """An ONNX model is malformed, hostile, or does not match its declared contract."""


class DataError(InputError):
    """An evaluation data set (.npz) is malformed or inconsistent with the model."""


class Refusal(RelgateError):
    """A governed "no": the inputs were valid, and the answer is no."""

    exit_code = EXIT_REFUSED


class GateFailed(Refusal):
    """One or more gates did not pass."""


class NotReproduced(Refusal):
    """Evidence did not reproduce: a hash or a re-evaluated metric differs from the report."""


class VerificationFailed(Refusal):
    """A bundle does not match its manifest."""


class PublishRefused(Refusal):
    """Publication would overwrite, replace a partial folder, or race another publisher."""
