"""relgate init: params.yaml and dvc.yaml for calibrate -> validate -> promote, from a model."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from relgate.errors import EXIT_OK

HELP = ("write params.yaml and dvc.yaml (calibrate -> validate -> promote with the relgate CLI) "
        "for a model and its validation and test splits")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL.onnx",
                        help="the ONNX model, inside the repository (external data beside it)")
    parser.add_argument("--val", required=True, metavar="VAL.npz",
                        help="the validation split (calibration is fit on it)")
    parser.add_argument("--test", required=True, metavar="TEST.npz",
                        help="the test split (validate and promote judge on it)")
    parser.add_argument("--task", choices=("binary", "multiclass"),
                        help="the task kind (default: binary, or multiclass for "
                             "--output-type logits/probabilities)")
    parser.add_argument("--output", metavar="NAME",
                        help="the output to judge (default: what relgate inspect picks)")
    parser.add_argument("--output-type", choices=("logit", "probability", "logits", "probabilities"),
                        help="what the output holds, when the graph does not prove it "
                             "(relgate refuses rather than guess)")
    parser.add_argument("--positive-index", type=int, metavar="I",
                        help="column of the positive class of a binary [N, 2] output")
    parser.add_argument("--release", default="v0.1.0", help="release name (default: %(default)s)")
    parser.add_argument("--root", default=".", help="the repository (default: current folder)")
    parser.add_argument("--git", action="store_true", help="run git init if it is no git repository")
    parser.add_argument("--dvc", action="store_true", help="run dvc init if DVC is not set up")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing params.yaml / dvc.yaml")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def run(args: argparse.Namespace) -> int:
    from relgate.init import plan_init, refuse_existing, write_init
    from relgate.report import console, print_json

    root = Path(args.root)
    if not root.is_dir():
        from relgate.errors import UsageError

        raise UsageError(f"--root {args.root}: not a folder", hint="give the repository folder")
    plan = plan_init(root, model=args.model, val=args.val, test=args.test, task=args.task,
                     output=args.output, output_type=args.output_type,
                     positive=args.positive_index, release=args.release)
    refuse_existing(root, plan, force=args.force)  # before git or dvc init touch anything
    _ensure_tools(root, git=args.git, dvc=args.dvc)
    written = write_init(root, plan, force=args.force)
    if args.json:
        print_json({**plan.to_dict(), "written": written})
        return EXIT_OK
    out = console()
    out.print(f"wrote {', '.join(written)} in {root}")
    for choice in plan.choices:
        out.print(f"  {choice}")
    out.print("next:")
    for step in plan.next_steps:
        out.print(f"  {step}")
    return EXIT_OK


def _ensure_tools(root: Path, *, git: bool, dvc: bool) -> None:
    """A git repository with DVC set up, initialised only when the flags allow it."""
    from relgate.distribution import dvc_command, tool_error
    from relgate.errors import UsageError

    inside = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root,
                            capture_output=True, text=True)
    if inside.returncode != 0:
        if not git:
            raise UsageError(f"{root} is not inside a git repository",
                             hint="run git init first, or pass --git")
        if shutil.which("git") is None:
            raise UsageError("git is not installed", hint="install git")
        _checked(["git", "init", "-q"], root, "git init")
    if not (root / ".dvc").is_dir():
        if not dvc:
            raise UsageError(f"{root} has no DVC set up (.dvc/)",
                             hint="run dvc init first, or pass --dvc")
        proc = subprocess.run([*dvc_command(), "init", "-q"], cwd=root, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise UsageError(f"dvc init failed: {tool_error(proc)}",
                             hint="run dvc init yourself and see why")


def _checked(cmd: list[str], root: Path, what: str) -> None:
    from relgate.errors import UsageError

    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"{what} failed: {proc.stderr.strip().splitlines()[-1:]}",
                         hint=f"run {what} yourself and see why")
