"""The distribution flows against an S3 remote (dvc-s3) served by a moto server on 127.0.0.1.

The server is started and stopped by the ``moto_server`` fixture (conftest.py);
credentials are dummies and the endpoint is set with ``dvc remote modify``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import S3_ENV, MotoServer, Producer, Tools, make_producer, tool_env
from tests.e2e.test_distribution import leftovers, tree_digests

# ~10 s alone, ~17 s on a busy 2-core machine (server start, producer repro, three flows):
# under the 20 s line for @slow, so the default run includes it
pytestmark = pytest.mark.e2e

BUCKET = "relgate-registry"


@pytest.fixture(scope="module")
def s3_producer(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Producer:
    """A registry whose DVC remote is s3://relgate-registry/store on the moto server."""
    moto_server.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    tools = Tools(env=tool_env(tmp_path_factory.mktemp("s3-home"), S3_ENV))
    return make_producer(tmp_path_factory.mktemp("s3-registry"), tools,
                         dvc_remote=f"s3://{BUCKET}/store",
                         remote_options={"endpointurl": moto_server.endpoint})


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dummy credentials for the in-process relgate (and the dvc it runs)."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    yield


def _keys(server: MotoServer) -> list[str]:
    client: Any = server.client()
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_bundle_lives_in_the_bucket_and_a_fresh_clone_pulls_and_verifies(
        s3_producer: Producer, moto_server: MotoServer, tmp_path: Path) -> None:
    keys = _keys(moto_server)
    assert any(k.startswith("store/files/md5/") and k.endswith(".dir") for k in keys)
    tools = s3_producer.tools
    clone = tmp_path / "clone"
    tools.git("clone", "-q", s3_producer.origin, clone, cwd=tmp_path)
    tools.dvc("pull", "-q", "models/core/v1.0.0", cwd=clone)
    bundle = clone / "models" / "core" / "v1.0.0"
    tools.relgate("verify", bundle, "--root-digest", s3_producer.digests["v1.0.0"], cwd=clone)
    assert tree_digests(bundle) == tree_digests(s3_producer.root / "models" / "core" / "v1.0.0")


def test_new_project_imports_from_s3_and_verifies(s3_producer: Producer, tmp_path: Path) -> None:
    tools = s3_producer.tools
    proj = tmp_path / "consumer"
    proj.mkdir()
    tools.git("init", "-q", cwd=proj)
    tools.dvc("init", "-q", cwd=proj)
    tools.dvc("import", "-q", s3_producer.origin, "models/core/v1.0.0", "--rev", "core@v1.0.0",
              "-o", "core", cwd=proj)
    tools.relgate("verify", "core", "--root-digest", s3_producer.digests["v1.0.0"], cwd=proj)


def test_fetch_from_s3_then_a_damaged_object_is_refused(s3_producer: Producer,
                                                        moto_server: MotoServer, s3_env: None,
                                                        cli: Any, tmp_path: Path) -> None:
    good = cli("fetch", s3_producer.origin, "v1.0.0", "-o", tmp_path / "good", "--json")
    assert good.code == 0, good.err
    assert json.loads(good.out)["pin"]["root_digest"] == s3_producer.digests["v1.0.0"]

    # damage one object in the bucket: the bundle's model.onnx.data
    client: Any = moto_server.client()
    dvc_file = s3_producer.root / "dvc.lock"
    import yaml

    outs = yaml.safe_load(dvc_file.read_text())["stages"]["promote"]["outs"]
    dir_md5 = next(o["md5"] for o in outs if o["path"] == "models/core")
    listing = json.loads(client.get_object(Bucket=BUCKET,
                                           Key=f"store/files/md5/{dir_md5[:2]}/{dir_md5[2:]}")
                         ["Body"].read())
    md5 = next(e["md5"] for e in listing if e["relpath"] == "v1.0.0/models/model.onnx.data")
    key = f"store/files/md5/{md5[:2]}/{md5[2:]}"
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    damaged = bytearray(original)
    damaged[0] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(damaged))
    try:
        out = tmp_path / "deps" / "core"
        bad = cli("fetch", s3_producer.origin, "v1.0.0", "-o", out)
        assert bad.code == 1, bad.err
        assert "models/model.onnx.data" in bad.out
        assert not os.path.lexists(out) and leftovers(out.parent) == []
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)
