"""Sharing through a DVC remote, as a team does it: a real S3 server (moto) on loopback, the tiny pipeline run and
pushed once, then fresh clones that pull (all of it, one stage, or what a rerun needs) instead of recomputing.
Credentials reach DVC only through the environment of its processes; the moto server checks them."""
from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.dvcrepo import copy_repo, dvc, run, set_params

pytestmark = pytest.mark.slow

UPSTREAM = ("acquire@music21", "prepare", "convert", "train")  # the stages a generate param cannot touch
BUCKET, PARTIAL = "dvc-store", "dvc-partial"
UP_TO_DATE = "Data and pipelines are up to date."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    def __init__(self, endpoint: str, key: str, secret: str, nowhere: Path):
        self.endpoint, self.key, self.secret, self.nowhere = endpoint, key, secret, nowhere

    def env(self, key: str | None = "", secret: str | None = "") -> dict:
        """Variables for a DVC process: this server's credentials (or others; None leaves one unset), and no
        profile or ~/.aws file of whoever runs the tests."""
        return {"AWS_ACCESS_KEY_ID": self.key if key == "" else key,
                "AWS_SECRET_ACCESS_KEY": self.secret if secret == "" else secret,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
                "AWS_CONFIG_FILE": str(self.nowhere), "AWS_SHARED_CREDENTIALS_FILE": str(self.nowhere)}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto_server on 127.0.0.1, with an IAM user allowed s3:* and two buckets; then authentication is switched
    on, so every request must be signed with that user's key (a wrong key is refused as a real S3 would)."""
    pytest.importorskip("moto.server", reason="needs moto[server] (in the dev extra) to run an S3 server on loopback")
    import boto3
    import requests

    d = tmp_path_factory.mktemp("moto")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(d / "moto.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited ({proc.returncode}): {(d / 'moto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"moto_server did not listen on {endpoint} within 60 s") from None
                time.sleep(0.2)
        boot = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot",
                    aws_secret_access_key="boot")
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="dvc")
        iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        for bucket in (BUCKET, PARTIAL):
            boto3.client("s3", **boot).create_bucket(Bucket=bucket)
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield S3(endpoint, key["AccessKeyId"], key["SecretAccessKey"], d / "no-aws-config")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def origin(built, tmp_path_factory, s3) -> Path:
    """The machine that computed everything: the tiny pipeline run, committed with its remote (URL and endpoint,
    no credentials), both artifacts tagged as versions, pushed; `hub.git` beside it plays the git server."""
    d = tmp_path_factory.mktemp("remote")
    r = copy_repo(built.repo, d / "origin")  # the session's shared run (conftest.py), committed
    dvc(r, "remote", "add", "-d", "store", f"s3://{BUCKET}/midi")
    dvc(r, "remote", "modify", "store", "endpointurl", s3.endpoint)
    run(r, "git", "add", "-A")
    run(r, "git", "commit", "-qm", "S3 remote")
    for name in ("gru-model", "midi-dataset"):
        run(r, "git", "tag", "-a", f"{name}@v1.0.0", "-m", f"Registering artifact {name} version v1.0.0")
    pushed = dvc(r, "push", extra_env=s3.env())
    assert re.search(r"\d+ files pushed", pushed.stdout), pushed.stdout
    run(d, "git", "clone", "-q", "--bare", str(r), str(d / "hub.git"))
    return r


@pytest.fixture
def hub(origin) -> Path:
    return origin.parent / "hub.git"


@pytest.fixture(scope="module")
def stages(origin) -> list[str]:
    """Every stage of the pipeline, as DVC names them (foreach items expanded)."""
    names = dvc(origin, "stage", "list", "--name-only").stdout.split()
    assert set(UPSTREAM) | {"evaluate", "generate"} <= set(names), names
    return names


def _clone(hub: Path, dest: Path) -> Path:
    run(dest.parent, "git", "clone", "-q", str(hub), str(dest))
    return dest


def _files(repo: Path, under: str = "") -> dict[str, str]:
    """md5 of every DVC output file (under data/ and models/, or `under`), by path."""
    roots = [repo / under] if under else [repo / "data", repo / "models"]
    return {p.relative_to(repo).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for root in roots if root.exists() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".gitkeep"}


def test_credentials_live_in_the_environment_only(origin, s3):
    config = (origin / ".dvc/config").read_text()
    assert f"url = s3://{BUCKET}/midi" in config and f"endpointurl = {s3.endpoint}" in config
    for p in [origin / ".dvc" / n for n in ("config", "config.local")] + [p for p in origin.rglob("*") if p.is_file()
                                                                          and ".git" not in p.parts
                                                                          and "cache" not in p.parts]:
        if p.exists():
            text = p.read_bytes()
            assert s3.secret.encode() not in text and s3.key.encode() not in text, p


def test_a_fresh_clone_pulls_everything_and_repro_runs_no_stage(origin, hub, s3, stages, tmp_path):
    c = _clone(hub, tmp_path / "clone")
    assert not (c / "models/model.pt").exists()
    dvc(c, "pull", extra_env=s3.env())
    want = _files(origin)
    assert len(want) >= 15 and _files(c) == want  # raw shards, datasets, models, samples: byte for byte
    assert dvc(c, "status").stdout.strip() == UP_TO_DATE
    assert "Cache and remote 'store' are in sync." in dvc(c, "status", "--cloud", extra_env=s3.env()).stdout

    out = dvc(c, "repro").stdout
    assert "Running stage" not in out, out
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert out.strip().endswith(UP_TO_DATE)
    assert run(c, "git", "status", "--porcelain").stdout == ""  # dvc.lock not even rewritten


def test_pulling_one_stage_brings_only_its_outputs(origin, hub, s3, tmp_path):
    c = _clone(hub, tmp_path / "clone")
    dvc(c, "pull", "prepare", extra_env=s3.env())
    want = _files(origin)
    got = _files(c)
    assert set(got) == {"data/prepared/near.parquet", "data/prepared/rejects.parquet",
                        "data/prepared/selected.parquet"}
    assert got == {k: want[k] for k in got}
    for other in ("data/raw", "data/processed", "data/samples", "models/model.pt", "models/last.pt"):
        assert not (c / other).exists()
    status = dvc(c, "status").stdout
    assert "data/prepared" not in status  # neither prepare's outputs nor convert's input are missing or changed
    assert re.search(r"not in cache:\s+data/processed", status) and re.search(r"deleted:\s+data/raw", status)


def test_a_run_pushed_to_the_run_cache_is_restored_in_a_clone_without_running(hub, s3, stages, tmp_path):
    env = s3.env()
    # a colleague tries a param, runs it (fetching only what generate reads), shares the run, commits nothing
    w = _clone(hub, tmp_path / "colleague")
    set_params(w, {"generate": {"n_samples": 4}})
    out = dvc(w, "repro", "--pull", "--allow-missing", extra_env=env).stdout
    ran = [s for s in stages if f"Running stage '{s}'" in out]
    assert "generate" in ran and not set(ran) & set(UPSTREAM), out
    dvc(w, "push", "--run-cache", extra_env=env)

    c = _clone(hub, tmp_path / "clone")
    set_params(c, {"generate": {"n_samples": 4}})
    out = dvc(c, "repro", "--pull", "--allow-missing", extra_env=env).stdout
    # every stage restores from the run cache, except evaluate: its outputs are metrics committed to git
    # (cache: false), which DVC's run cache does not hold, so it reruns (seconds) and writes the same numbers
    for stage in ran:
        if stage == "evaluate":
            assert "Running stage 'evaluate'" in out, out
        else:
            assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert [line for line in out.splitlines() if line.startswith("Running stage")] == ["Running stage 'evaluate':"]
    assert (c / "metrics/eval.json").read_text() == (w / "metrics/eval.json").read_text()
    samples = _files(c, "data/samples")
    assert "data/samples/sample_003.mid" in samples and samples == _files(w, "data/samples")
    # only what the rerun reads came over: not the raw corpus, not prepare's tables
    assert not (c / "data/raw").exists() and not (c / "data/prepared").exists()


def test_artifacts_get_fetches_the_model_and_the_dataset_from_the_remote(origin, hub, s3, tmp_path):
    env, want = s3.env(), _files(origin)
    dvc(tmp_path, "artifacts", "get", str(hub), "gru-model", extra_env=env)
    assert hashlib.md5((tmp_path / "model.pt").read_bytes()).hexdigest() == want["models/model.pt"]

    dvc(tmp_path, "artifacts", "get", "--rev", "v1.0.0", str(hub), "midi-dataset", "-o", "dataset", extra_env=env)
    got = {k.replace("dataset/", "data/processed/", 1): v for k, v in _files(tmp_path, "dataset").items()}
    assert got == {k: v for k, v in want.items() if k.startswith("data/processed/")} and got

    dvc(tmp_path, "get", str(hub), "models/model.pt", "-o", "via-get.pt", extra_env=env)
    assert hashlib.md5((tmp_path / "via-get.pt").read_bytes()).hexdigest() == want["models/model.pt"]
    # the bare hub holds no DVC cache: the bytes come from S3, so a wrong secret makes the same call fail
    bad = dvc(tmp_path, "artifacts", "get", "-o", "bad.pt", str(hub), "gru-model", ok=False,
              extra_env=s3.env(secret="wrong"))
    assert bad.returncode != 0 and "Forbidden" in bad.stderr and not (tmp_path / "bad.pt").exists()


def test_a_remote_that_is_down_or_refuses_credentials_fails_the_pull(hub, s3, stages, tmp_path):
    c = _clone(hub, tmp_path / "clone")
    closed = _free_port()
    cases = [  # (what goes wrong, environment, DVC's message)
        ("wrong secret", s3.env(secret="wrong"), "Forbidden"),
        ("no credentials", s3.env(key=None, secret=None), "Unable to locate credentials"),
        ("server down", s3.env(), f'Could not connect to the endpoint URL: "http://127.0.0.1:{closed}/'),
    ]
    for what, env, message in cases:
        if what == "server down":
            dvc(c, "remote", "modify", "--local", "store", "endpointurl", f"http://127.0.0.1:{closed}")
        pull = dvc(c, "pull", ok=False, extra_env=env)
        assert pull.returncode != 0, what
        assert "failed to pull data from the cloud" in pull.stderr and message in pull.stderr, (what, pull.stderr)
        assert _files(c) == {}, what  # nothing half-written into the workspace
    status = dvc(c, "status").stdout
    assert all(f"{s}:" in status for s in stages), status

    # fix the cause (here: the endpoint) and the same clone pulls cleanly
    (c / ".dvc/config.local").unlink()
    dvc(c, "pull", extra_env=s3.env())
    assert dvc(c, "status").stdout.strip() == UP_TO_DATE


def test_a_partial_pull_never_leaves_a_stage_up_to_date(origin, hub, s3, tmp_path):
    env, want = s3.env(), _files(origin)
    # the same commit pushed to a second bucket, which then loses a training shard and the model
    (origin / ".dvc/config.local").write_text(f'[\'remote "partial"\']\n    url = s3://{PARTIAL}/midi\n'
                                              f"    endpointurl = {s3.endpoint}\n")
    dvc(origin, "push", "-r", "partial", extra_env=env)
    lost = [want["data/processed/pianoroll/train-00000.parquet"], want["models/model.pt"]]
    for h in lost:
        s3.client().delete_object(Bucket=PARTIAL, Key=f"midi/files/md5/{h[:2]}/{h[2:]}")

    c = _clone(hub, tmp_path / "clone")
    dvc(c, "remote", "modify", "--local", "store", "url", f"s3://{PARTIAL}/midi")
    pull = dvc(c, "pull", ok=False, extra_env=env)
    assert pull.returncode != 0 and "failed to pull data from the cloud" in pull.stderr
    assert all(h in pull.stdout + pull.stderr for h in lost)  # DVC names the missing objects

    # check out whatever did arrive: the stages whose outputs are complete, and nothing else
    ck = dvc(c, "checkout", ok=False)
    assert ck.returncode != 0 and "data/processed" in ck.stderr and "models/model.pt" in ck.stderr
    assert not (c / "data/processed").exists() and not (c / "models/model.pt").exists()
    lost_outputs = ("data/processed/", "models/model.pt")
    assert _files(c) == {k: v for k, v in want.items() if not k.startswith(lost_outputs)}
    status = dvc(c, "status").stdout
    assert re.search(r"not in cache:\s+data/processed", status) and re.search(r"not in cache:\s+models/model.pt",
                                                                              status)
    for stage in ("convert", "train", "evaluate", "generate"):
        assert f"{stage}:" in status
    dry = dvc(c, "repro", "--dry", "convert").stdout  # repro would recompute the incomplete stage
    assert "Stage 'prepare' didn't change, skipping" in dry and "Running stage 'convert'" in dry

    # a machine that has the objects pushes again. The lost model goes back, the lost shard does not: DVC takes a
    # directory whose .dir listing is on the remote as complete. Deleting that listing makes push check each file.
    assert dvc(origin, "push", "-r", "partial", extra_env=env).stdout.strip() == "1 file pushed"
    listing = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]["convert"]["outs"][0]["md5"]
    assert listing.endswith(".dir")
    s3.client().delete_object(Bucket=PARTIAL, Key=f"midi/files/md5/{listing[:2]}/{listing[2:]}")
    assert dvc(origin, "push", "-r", "partial", extra_env=env).stdout.strip() == "2 files pushed"
    dvc(c, "pull", extra_env=env)
    assert _files(c) == want and dvc(c, "status").stdout.strip() == UP_TO_DATE
