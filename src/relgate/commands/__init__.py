"""Subcommands of the relgate CLI, one module each (discovered by relgate.cli).

Contract for a command module: ``HELP`` (one line), ``configure(parser)`` adds
its options (every option has help text; a test checks), ``run(args) -> int``
does the work and returns the exit code. Module-level imports must stay light:
no onnxruntime, no torch, no rich (import those inside ``run``).
"""
