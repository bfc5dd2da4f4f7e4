"""Strict JSON reading and deterministic atomic writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relgate.errors import InputError, JSONFormatError
from relgate.jsonio import atomic_write_bytes, dumps, loads_strict, read_json, write_json


def test_reads_plain_json(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text('{"b": [1, 2.5, null, true], "a": "é"}', encoding="utf-8")
    assert read_json(p) == {"b": [1, 2.5, None, True], "a": "é"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"outer": {"k": 1, "k": 1}}', "duplicate key 'k'"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'{"a": Infinity}', "Infinity is not allowed"),
        (b'{"a": -Infinity}', "-Infinity is not allowed"),
        (b'{"a": 1e999}', "overflows to infinity"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": 1', "invalid JSON at line 1"),
        (b"", "invalid JSON"),
        (b'{"n": ' + b"9" * 10_000 + b"}", "unreadable JSON"),
    ],
)
def test_rejects_ambiguous_json(text: bytes, fragment: str) -> None:
    with pytest.raises(JSONFormatError) as info:
        loads_strict(text, source="x.json")
    assert fragment in info.value.message
    assert info.value.exit_code == 2


def test_depth_cap_counts_brackets_outside_strings() -> None:
    assert loads_strict(b'{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    deep = b"[" * 65 + b"]" * 65
    with pytest.raises(JSONFormatError, match="nesting depth 65 exceeds the limit of 64"):
        loads_strict(deep)
    assert loads_strict(b"[" * 64 + b"]" * 64) is not None


def test_hundred_thousand_levels_is_one_clean_error() -> None:
    with pytest.raises(JSONFormatError, match="nesting depth 100000"):
        loads_strict(b"[" * 100_000 + b"]" * 100_000)


def test_size_cap(tmp_path: Path) -> None:
    p = tmp_path / "big.json"
    p.write_bytes(b'["' + b"x" * 2000 + b'"]')
    with pytest.raises(JSONFormatError, match="larger than the 1000 byte limit"):
        read_json(p, max_bytes=1000)


def test_missing_directory_and_fifo_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(InputError, match="is a directory"):
        read_json(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_json(fifo)  # must not block waiting for a writer


def test_dumps_is_deterministic_and_round_trips() -> None:
    a = {"b": 1, "a": [0.1, -0.0, 1e-17, 3], "c": {"z": True, "y": None}}
    b = {"c": {"y": None, "z": True}, "a": [0.1, 0.0, 1e-17, 3], "b": 1}
    assert dumps(a) == dumps(b)
    assert dumps(a).endswith(b"\n")
    assert json.loads(dumps(a)) == {"a": [0.1, 0.0, 1e-17, 3], "b": 1, "c": {"y": None, "z": True}}
    assert list(json.loads(dumps(a))) == ["a", "b", "c"]


def test_dumps_refuses_nan() -> None:
    with pytest.raises(JSONFormatError):
        dumps({"a": float("nan")})


def test_write_json_is_atomic_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "report.json"
    write_json(p, {"v": 1})
    with pytest.raises(JSONFormatError):
        write_json(p, {"v": float("inf")})
    assert read_json(p) == {"v": 1}

    def chunks():  # a writer that dies half-way
        yield b'{"v": 2, "pad": "'
        raise RuntimeError("disk vanished")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(p, chunks())
    assert read_json(p) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report.json"]


def test_sigkill_mid_write_never_leaves_a_partial_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    write_json(p, {"old": True})
    code = (
        "import os, signal\n"
        "from relgate.jsonio import atomic_write_bytes\n"
        "def gen():\n"
        "    yield b'{\"new\": ' + b' ' * 100000\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic_write_bytes({str(p)!r}, gen())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert read_json(p) == {"old": True}


def test_written_files_follow_the_umask_not_mkstemp(tmp_path: Path) -> None:
    p = tmp_path / "shared.json"
    write_json(p, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o666 & ~mask
