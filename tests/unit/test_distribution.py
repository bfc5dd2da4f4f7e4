"""relgate.distribution without DVC: records, pins, listings, fetch's refusals, rendering.

The DVC paths (download, damaged remotes, S3) are in tests/e2e; here git is
real where a repository is needed, and nothing reaches a network.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relgate.distribution import (
    FetchResult,
    Pin,
    dvc_command,
    fetch_bundle,
    list_releases,
    parse_record,
    pin_from_record,
    tool_error,
)
from relgate.errors import InputError, JSONFormatError, SchemaError
from relgate.jsonio import dumps
from relgate.manifest import write_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "release"
MIRROR = json.loads((EXAMPLES / "positive" / "mirror-with-root-digest.json").read_text())
IN_BUNDLE = json.loads((EXAMPLES / "positive" / "in-bundle.json").read_text())


def record(name: str, *, digest: str = "ab" * 32, created: str = "2026-11-21T10:00:00Z",
           auc: float = 0.9) -> dict[str, Any]:
    rec = copy.deepcopy(MIRROR)
    rec["name"], rec["tag"], rec["created"] = name, f"core@{name}", created
    rec["bundle"] = {"path": f"models/core/{name}", "root_digest": digest}
    rec["metrics"]["auc"]["value"] = auc
    return rec


def write_record(root: Path, rec: dict[str, Any], *, name: str | None = None) -> Path:
    path = root / "analysis" / f"release_{name or rec['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(rec))
    return path


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


# --------------------------------------------------------------------------- tools


def test_tool_error_keeps_the_error_lines_on_one_line() -> None:
    proc = subprocess.CompletedProcess(
        ["dvc"], 255, stdout="",
        stderr="Collecting\nERROR: unexpected error - [Errno 2] No storage files available: "
               "'models/core/v1/README.md'\n\nHaving any troubles? Hit us up at "
               "https://dvc.org/support, we are always happy to help!\n")
    text = tool_error(proc)
    assert text == ("ERROR: unexpected error - [Errno 2] No storage files available: "
                    "'models/core/v1/README.md'")
    assert tool_error(subprocess.CompletedProcess(["git"], 128, "", "")) == "exit status 128"
    assert "fatal: no such repo" in tool_error(
        subprocess.CompletedProcess(["git"], 128, "", "hint\nfatal: no such repo\n"))
    assert len(tool_error(subprocess.CompletedProcess(["x"], 1, "", "ERROR: " + "x" * 5000))) < 700


def test_dvc_command_runs() -> None:
    out = subprocess.run([*dvc_command(), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit()


# --------------------------------------------------------------------------- records and pins


def test_parse_record_accepts_the_schema_examples_and_checks_the_name() -> None:
    assert parse_record(dumps(MIRROR), source="m", name=MIRROR["name"])["name"] == MIRROR["name"]
    with pytest.raises(InputError, match="expected 'v9'"):
        parse_record(dumps(MIRROR), source="m", name="v9")


@pytest.mark.parametrize("bad", sorted((EXAMPLES / "negative").glob("*.json")),
                         ids=lambda p: p.stem)
def test_parse_record_refuses_schema_negatives(bad: Path) -> None:
    with pytest.raises(SchemaError, match=r"^rec: "):
        parse_record(bad.read_bytes(), source="rec")


def test_parse_record_is_strict_json() -> None:
    with pytest.raises(JSONFormatError):
        parse_record(b'{"name": "a", "name": "b"}', source="rec")
    with pytest.raises(InputError, match="larger"):
        parse_record(b" " * (17 * 1024 * 1024), source="rec")


def test_pin_from_record() -> None:
    pin, path = pin_from_record(None, name="v1", source="analysis/release_v1.json at abc")
    assert pin.root_digest is None and path is None and "not found" in pin.note
    pin, path = pin_from_record(dumps(IN_BUNDLE), name=IN_BUNDLE["name"], source="r")
    assert pin.root_digest is None and path is None and "no bundle.root_digest" in pin.note
    pin, path = pin_from_record(dumps(MIRROR), name=MIRROR["name"], source="r")
    assert pin.root_digest == MIRROR["bundle"]["root_digest"] and pin.note == ""
    assert path == MIRROR["bundle"]["path"]


# --------------------------------------------------------------------------- releases


def test_releases_of_a_plain_folder_newest_first_with_presence(tmp_path: Path, cli: Any) -> None:
    for name, day in (("v1.9.0", "01"), ("v1.10.0", "02"), ("v1.10.0-rc1", "03"),
                      ("nightly", "04")):
        write_record(tmp_path, record(name, created=f"2026-11-{day}T10:00:00Z"))
    (tmp_path / "models" / "core" / "v1.10.0").mkdir(parents=True)
    (tmp_path / "models" / "core" / "v1.10.0" / "manifest.json").write_text("{}")
    (tmp_path / "models" / "core" / "v1.9.0").mkdir(parents=True)  # no manifest: not a bundle

    listing = list_releases(str(tmp_path))
    assert [r.name for r in listing.releases] == ["v1.10.0", "v1.10.0-rc1", "v1.9.0", "nightly"]
    assert [r.present for r in listing.releases] == [True, False, False, False]
    assert all(r.tag is None for r in listing.releases)
    assert listing.local and listing.commit is None
    assert any("tags are not listed" in n for n in listing.notes)
    first = listing.releases[0]
    assert first.metrics == {"auc": 0.9, "f1": MIRROR["metrics"]["f1"]["value"]}
    assert first.promoted["path"] == next(a["path"] for a in MIRROR["artifacts"]
                                          if a["role"] == "promoted")

    result = cli("releases", tmp_path, "--json")
    assert result.code == 0
    assert [r["name"] for r in json.loads(result.out)["releases"]] == [
        "v1.10.0", "v1.10.0-rc1", "v1.9.0", "nightly"]
    text = cli("releases", tmp_path)
    assert text.code == 0 and text.out.splitlines()[0].endswith(": 4")
    assert "v1.10.0\t-\t2026-11-02T10:00:00Z" in text.out


def test_releases_refuses_a_bad_record_naming_it(tmp_path: Path, cli: Any) -> None:
    write_record(tmp_path, record("v1.0.0"))
    bad = record("v2.0.0")
    del bad["artifacts"]
    write_record(tmp_path, bad)
    result = cli("releases", tmp_path)
    assert result.code == 2 and "release_v2.0.0.json" in result.err and "artifacts" in result.err

    (tmp_path / "analysis" / "release_v2.0.0.json").unlink()
    write_record(tmp_path, record("v3.0.0"), name="v4.0.0")  # file and record disagree
    result = cli("releases", tmp_path)
    assert result.code == 2 and "release_v4.0.0.json" in result.err


def test_releases_of_a_git_registry_lists_tags_and_records_only_at_a_tag(tmp_path: Path,
                                                                         cli: Any) -> None:
    repo = tmp_path / "registry"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write_record(repo, record("v1.0.0"))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "v1.0.0", cwd=repo)
    git("tag", "-a", "-m", "annotated", "core@v1.0.0", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "analysis" / "release_v1.0.0.json").unlink()  # gone from the tip, kept at its tag
    write_record(repo, record("v1.1.0", digest="cd" * 32))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "v1.1.0", cwd=repo)
    git("tag", "core@v1.1.0", cwd=repo)
    second = git("rev-parse", "HEAD", cwd=repo)
    bare = tmp_path / "registry.git"
    git("clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)

    for source in (repo, bare):
        listing = list_releases(str(source))
        assert listing.local is (source == repo)
        assert listing.commit == second
        got = {r.name: (r.tag, r.tag_commit, r.root_digest) for r in listing.releases}
        assert got == {"v1.1.0": ("core@v1.1.0", second, "cd" * 32),
                       "v1.0.0": ("core@v1.0.0", first, "ab" * 32)}
        assert [r.record.split(" at ")[-1] for r in listing.releases][1] == "core@v1.0.0"


# --------------------------------------------------------------------------- fetch refusals


def test_fetch_never_touches_an_existing_target(tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "core"
    out.mkdir()
    (out / "keep").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for target in (out, link):
        result = cli("fetch", tmp_path / "no-such-repo", "v1.0.0", "-o", target)
        assert result.code == 2 and "already exists" in result.err
    assert (out / "keep").read_text() == "mine" and os.path.islink(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core", "link"]


@pytest.mark.parametrize("name", ["../v1", "-rf", "v1/x", "v1.lock", "a..b", ""])
def test_fetch_refuses_names_that_are_not_release_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="not a release name"):
        fetch_bundle(str(tmp_path), name, tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == []


def test_fetch_from_something_that_is_not_a_registry_leaves_nothing(tmp_path: Path,
                                                                    cli: Any) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = cli("fetch", plain, "v1.0.0", "-o", tmp_path / "out" / "core")
    assert result.code == 2 and "cannot clone" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "plain"]
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_refuses_unknown_revisions_and_bad_records_before_downloading(
        tmp_path: Path, cli: Any) -> None:
    repo = tmp_path / "registry"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    bad = record("v1.0.0")
    bad["bundle"]["root_digest"] = "not-a-digest"
    write_record(repo, bad)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "bad record", cwd=repo)

    result = cli("fetch", repo, "v1.0.0", "-o", tmp_path / "a", "--rev", "no-such-tag")
    assert result.code == 2 and "unknown revision 'no-such-tag'" in result.err
    result = cli("fetch", repo, "v1.0.0", "-o", tmp_path / "a", "--rev=--output=x")
    assert result.code == 2 and "not a usable git revision" in result.err
    result = cli("fetch", repo, "v1.0.0", "-o", tmp_path / "a")
    assert result.code == 2 and "bundle.root_digest" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]


# --------------------------------------------------------------------------- rendering


def _result(tmp_path: Path, *, tamper: bool, pinned: bool) -> FetchResult:
    from relgate.bundle import verify_bundle

    bundle = tmp_path / "b"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "m.onnx").write_bytes(b"model")
    manifest = write_manifest(bundle)
    if tamper:
        (bundle / "models" / "m.onnx").write_bytes(b"MODEL")
    verify = verify_bundle(bundle)
    pin = Pin(root_digest=manifest.root_digest if pinned else None, source="rec at abc",
              note="" if pinned else "rec not found: no root digest pinned")
    return FetchResult(release="v1", repo="repo", rev="core@v1", commit="c" * 40,
                       bundle_path="models/core/v1", out="deps/core", placed=not tamper, pin=pin,
                       verify=verify, notes=(pin.note,) if pin.note else ())


def test_fetch_rendering(tmp_path: Path) -> None:
    from relgate.report.releases import fetch_text

    ok = _result(tmp_path / "ok", tamper=False, pinned=True)
    buf = io.StringIO()
    fetch_text(ok, buf)
    assert ok.ok and "fetched and verified" in buf.getvalue()
    assert "matching the pin in rec at abc" in buf.getvalue()
    assert json.loads(dumps(ok.to_dict()))["pin"]["source"] == "rec at abc"

    bad = _result(tmp_path / "bad", tamper=True, pinned=False)
    buf = io.StringIO()
    fetch_text(bad, buf)
    text = buf.getvalue()
    assert not bad.ok and "NOT fetched" in text and "models/m.onnx" in text
    assert "nothing was written to deps/core" in text and "note: rec not found" in text


def test_an_oversized_record_in_a_registry_is_refused_before_it_is_read(tmp_path) -> None:
    import subprocess

    import pytest

    from relgate.distribution import _MAX_RECORD_BYTES, _show
    from relgate.errors import InputError

    repo = tmp_path / "reg"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    big = repo / "analysis" / "release_v1.json"
    big.parent.mkdir()
    with open(big, "wb") as fh:
        fh.truncate(_MAX_RECORD_BYTES + 1)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "big"], cwd=repo, check=True)
    with pytest.raises(InputError, match="larger than the"):
        _show(repo, "HEAD", "analysis/release_v1.json")
    assert _show(repo, "HEAD", "analysis/missing.json") is None


# --------------------------------------------------------------------------- pins without a record


def _tagged_repo(tmp_path: Path, *messages: str, annotated: bool = True) -> Path:
    repo = tmp_path / "registry"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "f").write_text("x")
    git("add", "f", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    args = [a for m in messages for a in ("-m", m)]
    git("tag", *(["-a", *args] if annotated else []), "core@v1.0.0", cwd=repo)
    return repo


def test_pin_from_tag_reads_the_line_publish_writes(tmp_path: Path) -> None:
    from relgate.distribution import pin_from_tag

    digest = "ab" * 32
    repo = _tagged_repo(tmp_path, "Release v1.0.0", f"relgate-root-digest: {digest}")
    pin = pin_from_tag(repo, "v1.0.0")
    assert pin is not None and pin.root_digest == digest
    assert pin.source == "annotated tag core@v1.0.0"
    assert pin_from_tag(repo, "v2.0.0") is None  # no such tag


@pytest.mark.parametrize("messages", [("Release v1.0.0",),
                                      ("Release", "relgate-root-digest: not-hex"),
                                      ("Release", f"relgate-root-digest: {'AB' * 32}"),
                                      ("Release", f"see relgate-root-digest: {'ab' * 32} x")])
def test_a_tag_without_a_usable_digest_line_pins_nothing(tmp_path: Path,
                                                         messages: tuple[str, ...]) -> None:
    from relgate.distribution import pin_from_tag

    pin = pin_from_tag(_tagged_repo(tmp_path, *messages), "v1.0.0")
    assert pin is not None and pin.root_digest is None


def test_a_lightweight_tag_pins_nothing(tmp_path: Path) -> None:
    from relgate.distribution import pin_from_tag

    pin = pin_from_tag(_tagged_repo(tmp_path, annotated=False), "v1.0.0")
    assert pin is not None and pin.root_digest is None


def test_choose_pin_prefers_the_record_and_refuses_disagreement_or_nothing() -> None:
    from relgate.distribution import choose_pin
    from relgate.errors import VerificationFailed

    record = Pin(root_digest="ab" * 32, source="rec")
    tag = Pin(root_digest="cd" * 32, source="annotated tag core@v1")
    none = Pin(root_digest=None, source="rec", note="rec not found")
    assert choose_pin(record, None, release="v1", where="HEAD") == record
    assert choose_pin(record, Pin(root_digest=None, source="tag"), release="v1",
                      where="HEAD") == record
    assert choose_pin(none, tag, release="v1", where="HEAD").root_digest == "cd" * 32
    with pytest.raises(VerificationFailed, match="but annotated tag core@v1 records"):
        choose_pin(record, tag, release="v1", where="HEAD")
    for tag_pin in (None, Pin(root_digest=None, source="tag core@v1")):
        with pytest.raises(VerificationFailed, match="no root digest is pinned outside the bundle"):
            choose_pin(none, tag_pin, release="v1", where="HEAD")


# --------------------------------------------------------------------------- leftover fetch folders


def test_stale_fetch_folders_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    from relgate.bundle import _host_tag, _proc_start
    from relgate.distribution import FETCH_PREFIX, clean_stale_fetches

    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    start = (_proc_start(me) or ("", 0))[1]
    host = _host_tag()
    names = {
        "dead": f"{FETCH_PREFIX}core.{host}.{dead.pid}.0.aaaa0000",
        "dead-download": f"{FETCH_PREFIX}core.{host}.{dead.pid}.0.aaaa0000.bundle",
        "pid-reused": f"{FETCH_PREFIX}x.y.{host}.{me}.{start + 1}.bbbb0000",
        "live": f"{FETCH_PREFIX}core.{host}.{me}.{start}.cccc0000",
        "other-host": f"{FETCH_PREFIX}core.00000000.{dead.pid}.0.dddd0000",
        "old-format": f"{FETCH_PREFIX}core.{dead.pid}.eeee0000",
        "not-ours": "core",
    }
    for name in names.values():
        (tmp_path / name / "repo").mkdir(parents=True)
        (tmp_path / name / "repo" / "file").write_text("x")
    sealed = tmp_path / names["dead-download"] / "repo"  # as a sealed download is
    (sealed / "file").chmod(0o444)
    sealed.chmod(0o555)
    (tmp_path / f"{FETCH_PREFIX}a-file.{host}.{dead.pid}.0.ffff0000").write_text("not a folder")
    notes = clean_stale_fetches(tmp_path)
    left = {p.name for p in tmp_path.iterdir()}
    removed = {k for k, v in names.items() if v not in left}
    assert removed == {"dead", "dead-download", "pid-reused"}
    assert len(notes) == 3 and all("which is gone" in n for n in notes)
    assert f"{FETCH_PREFIX}a-file.{host}.{dead.pid}.0.ffff0000" in left


def test_a_tag_message_that_is_not_utf8_is_read_not_a_crash(tmp_path: Path) -> None:
    from relgate.distribution import pin_from_tag

    digest = "cd" * 32
    repo = _tagged_repo(tmp_path, annotated=False)
    git("tag", "-d", "core@v1.0.0", cwd=repo)
    message = tmp_path / "message"
    message.write_bytes(b"Release \xff\xfe v1.0.0\n\nrelgate-root-digest: " + digest.encode() + b"\n")
    git("-c", "i18n.commitEncoding=latin-1", "tag", "-a", "-F", str(message), "core@v1.0.0",
        cwd=repo)
    pin = pin_from_tag(repo, "v1.0.0")
    assert pin is not None and pin.root_digest == digest
