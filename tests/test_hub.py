"""Models from the Hugging Face Hub (`mrc.hub`), against a fake hub served on 127.0.0.1.

The fake hub answers the calls huggingface_hub makes for a model download: the revision API
(`/api/models/{id}/revision/{rev}`), the tree listing (`/api/models/{id}/tree/{commit}`), and
HEAD + GET of `/{id}/resolve/{commit}/{file}`, with X-Repo-Commit, ETag and Content-Length. The
weights are served as the Hub serves LFS files: a 302 to another host ("localhost" instead of
127.0.0.1, the CDN) carrying X-Linked-Etag and X-Linked-Size. Errors carry the Hub's X-Error-Code.
The repositories hold tiny ELECTRA models with the real KoELECTRA vocabulary, in two revisions.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from mrc import analysis, download, hub, predict
from mrc.checkpoint import load_model, save_model
from mrc.errors import MRCError
from mrc.model import ElectraForQA, ModelConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_ID = "monologg/koelectra-base-v3-discriminator"
GATED_ID = "someone/gated-electra"
TOKEN = "hf_fake_token_with_access"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]]      # commit -> {file name: bytes}
    refs: dict[str, str]                      # branch or tag -> commit
    token: str | None = None                  # gated: only this token may read
    lfs: tuple[str, ...] = (".safetensors", ".bin", ".h5")

    def commit_of(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


@dataclass
class HubState:
    repos: dict[str, FakeRepo]
    requests: list[tuple[str, str]] = field(default_factory=list)   # (method, path)
    down: bool = False                        # answer 503 to everything
    cut: dict[str, int] = field(default_factory=dict)  # file name -> how many more GETs to cut halfway


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _HubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def state(self) -> HubState:
        return self.server.state

    def do_HEAD(self):  # noqa: N802
        self.route(body=False)

    def do_GET(self):  # noqa: N802
        self.route(body=True)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, send: bool = True):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send:
            self.wfile.write(body)

    def error(self, status: int, code: str, send: bool):
        self.reply(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code, "X-Error-Message": code}, send)

    def route(self, body: bool):
        path = unquote(urlsplit(self.path).path)
        self.state.requests.append((self.command, path))
        if self.state.down:
            return self.reply(503, b"down", send=body)
        parts = path.strip("/").split("/")
        if parts[0] == "cdn":
            return self.serve_blob(parts[1], body)
        if parts[:2] == ["api", "models"]:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
        else:
            repo_id, rest = "/".join(parts[:2]), parts[2:]
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self.error(404, "RepoNotFound", body)
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self.error(401 if self.headers.get("Authorization") is None else 403, "GatedRepo", body)
        if parts[:2] == ["api", "models"]:
            kind, revision = (rest[0], "/".join(rest[1:])) if rest else ("revision", "main")
            commit = repo.commit_of(revision.split("/")[0] if kind == "tree" else revision)
            if commit is None:
                return self.error(404, "RevisionNotFound", body)
            files = repo.commits[commit]
            if kind == "revision":
                info = {"id": repo_id, "sha": commit, "private": False, "gated": repo.token is not None,
                        "siblings": [{"rfilename": name} for name in files]}
                return self.reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
            tree = [{"type": "file", "path": name, "size": len(data), "oid": _sha1(data),
                     **({"lfs": {"oid": _sha256(data), "size": len(data), "pointerSize": 134}}
                        if name.endswith(repo.lfs) else {})} for name, data in files.items()]
            return self.reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        if rest[:1] != ["resolve"]:
            return self.error(404, "EntryNotFound", body)
        commit = repo.commit_of(rest[1])
        if commit is None:
            return self.error(404, "RevisionNotFound", body)
        name = "/".join(rest[2:])
        data = repo.commits[commit].get(name)
        if data is None:
            return self.reply(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, body)
        if name.endswith(repo.lfs):  # LFS: redirect to the CDN, the metadata rides on the redirect
            port = self.server.server_address[1]
            return self.reply(302, b"", {"Location": f"http://localhost:{port}/cdn/{_sha256(data)}",
                                         "X-Repo-Commit": commit, "ETag": f'"{_sha1(data)}"',
                                         "X-Linked-Etag": f'"{_sha256(data)}"', "X-Linked-Size": str(len(data))},
                              body)
        self.send_data(data, name, {"X-Repo-Commit": commit, "ETag": f'"{_sha1(data)}"'}, body)

    def serve_blob(self, sha: str, body: bool):
        for repo in self.state.repos.values():
            for files in repo.commits.values():
                for name, data in files.items():
                    if _sha256(data) == sha:
                        return self.send_data(data, name, {"ETag": f'"{sha}"'}, body)
        self.reply(404, b"", send=body)

    def send_data(self, data: bytes, name: str, headers: dict[str, str], body: bool):
        start = 0
        wanted = self.headers.get("Range")
        if wanted:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        self.send_response(206 if wanted else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        if self.state.cut.get(name, 0) > 0:  # drop the connection halfway through the body
            self.state.cut[name] -= 1
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


def tiny_repo_files(vocab_folder: Path, seed: int, tmp: Path) -> dict[str, bytes]:
    cfg = ModelConfig(hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    folder = tmp / f"model-{seed}"
    save_model(ElectraForQA(cfg), cfg, folder, vocab_folder)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def sharded(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same model as a two-shard safetensors checkpoint with its index, as large models are published."""
    state = safetensors_load(files["model.safetensors"])
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    out = {k: v for k, v in files.items() if k != "model.safetensors"}
    out.update({shard: safetensors_save({k: state[k] for k in keys}) for shard, keys in shards.items()})
    out["model.safetensors.index.json"] = json.dumps(index).encode()
    return out


@pytest.fixture(scope="module")
def repos(tmp_path_factory, koelectra_folder) -> dict[str, FakeRepo]:
    tmp = tmp_path_factory.mktemp("hub_repos")
    old, new = tiny_repo_files(koelectra_folder, 1, tmp), tiny_repo_files(koelectra_folder, 2, tmp)
    # The new revision also carries files the trainer must not fetch (other weight formats, a README).
    new_with_extras = {**new, "pytorch_model.bin": b"not needed" * 100, "tf_model.h5": b"not needed either",
                       "README.md": b"# tiny"}
    c_old, c_new = _sha1(b"commit-old"), _sha1(b"commit-new")

    def repo(**kwargs) -> FakeRepo:
        return FakeRepo(commits={c_old: old, c_new: new_with_extras}, refs={"main": c_new, "v1": c_old}, **kwargs)

    return {SEED_ID: repo(), "someone/tiny-electra": repo(), GATED_ID: repo(token=TOKEN),
            "someone/sharded-electra": FakeRepo(commits={c_new: sharded(new)}, refs={"main": c_new}),
            "someone/not-a-model": FakeRepo(commits={c_new: {"README.md": b"# data"}}, refs={"main": c_new})}


@pytest.fixture
def fake_hub(repos, tmp_path, monkeypatch):
    """A running fake hub; HF_ENDPOINT points at it and HF_HUB_CACHE at an empty folder."""
    state = HubState(repos)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.state = state
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.stop = lambda: (server.shutdown(), server.server_close())
    state.cache = tmp_path / "hf-cache"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(state.cache))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield state
    server.shutdown()
    server.server_close()


def gets(state: HubState, name: str) -> int:
    """How many times the body of file `name` was requested (repository path or CDN blob)."""
    blobs = {_sha256(data) for repo in state.repos.values() for files in repo.commits.values()
             for n, data in files.items() if n == name}
    return sum(1 for method, path in state.requests if method == "GET" and (
        path.endswith(f"/{name}") and "/resolve/" in path or path.removeprefix("/cdn/") in blobs))


def same_weights(folder: Path, files: dict[str, bytes]) -> bool:
    return (folder / "model.safetensors").read_bytes() == files["model.safetensors"]


# ---------------------------------------------------------------------------------------------
# Downloading, the cache, revisions


def test_first_download_then_cache_hit_with_the_server_stopped(fake_hub, repos):
    repo = repos["someone/tiny-electra"]
    folder = hub.resolve_model("someone/tiny-electra")
    assert folder.parent.parent == fake_hub.cache / "models--someone--tiny-electra"
    assert hub.snapshot_commit(folder) == repo.refs["main"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "tokenizer_config.json", "vocab.txt"]
    assert same_weights(folder, repo.commits[repo.refs["main"]])
    load_model(folder, report=None)
    assert not list(fake_hub.cache.rglob("*.incomplete"))
    fake_hub.stop()
    assert hub.resolve_model("someone/tiny-electra") == folder  # the refs/main of the cache answers


def test_a_sharded_model_downloads_every_shard_and_loads(fake_hub, repos):
    folder = hub.resolve_model("someone/sharded-electra")
    assert sorted(p.name for p in folder.glob("model*")) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    whole, _ = load_model(hub.resolve_model("someone/tiny-electra"), report=None)
    parts, _ = load_model(folder, report=None)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), parts.state_dict().values()))


@pytest.mark.parametrize("revision", ["v1", "old commit", "main", None])
def test_revision_of_a_tag_a_commit_or_a_branch(fake_hub, repos, revision):
    repo = repos["someone/tiny-electra"]
    if revision == "old commit":
        revision = repo.refs["v1"]
    expected = repo.commit_of(revision or "main")
    lines: list[str] = []
    folder = hub.resolve_model("someone/tiny-electra", revision=revision, say=lines.append)
    assert hub.snapshot_commit(folder) == expected
    assert same_weights(folder, repo.commits[expected])
    assert any(f"commit {expected}" in line for line in lines)


def test_unknown_revision_names_it(fake_hub):
    with pytest.raises(MRCError, match=r"--revision v9: someone/tiny-electra on http://127\.0\.0\.1:\d+ has no "
                                       r"branch, tag or commit"):
        hub.resolve_model("someone/tiny-electra", revision="v9")


def test_hub_cache_dir_flag_takes_the_place_of_the_default_cache(fake_hub, tmp_path):
    folder = hub.resolve_model("someone/tiny-electra", cache_dir=tmp_path / "seed-cache")
    assert folder.is_relative_to(tmp_path / "seed-cache") and not fake_hub.cache.exists()


@pytest.mark.parametrize("cached", [False, True])
def test_offline_mode_never_touches_the_network(fake_hub, monkeypatch, cached):
    if cached:
        online = hub.resolve_model("someone/tiny-electra")
    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if cached:
        assert hub.resolve_model("someone/tiny-electra") == online
    else:
        with pytest.raises(MRCError, match=r"HF_HUB_OFFLINE=1 and revision main of someone/tiny-electra is not "
                                           r"\(completely\) in the hub cache"):
            hub.resolve_model("someone/tiny-electra")
    assert fake_hub.requests == []


# ---------------------------------------------------------------------------------------------
# Failures: one message naming the id, the endpoint and what to do


def test_unknown_id_is_one_clear_error(fake_hub):
    with pytest.raises(MRCError) as info:
        hub.resolve_model("someone/no-such-model")
    message = str(info.value)
    assert "someone/no-such-model: no model of that name on " + fake_hub.url in message
    assert "no token was sent" in message and "HF_TOKEN" in message


def test_old_recipe_folder_that_does_not_exist_points_to_the_hub_id(fake_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MRCError) as info:
        hub.resolve_model("models/koelectra-base-v3-discriminator")
    message = str(info.value)
    assert f"{tmp_path}/models/koelectra-base-v3-discriminator does not exist" in message
    assert f"pass --model_name_or_path {SEED_ID}" in message


@pytest.mark.parametrize("token", [None, "hf_wrong"])
def test_gated_model_without_access_says_how_to_get_it(fake_hub, monkeypatch, token):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(MRCError) as info:
        hub.resolve_model(GATED_ID)
    message = str(info.value)
    assert f"{GATED_ID} (revision main) on {fake_hub.url} is a gated model" in message
    assert ("a token was sent" if token else "no token was sent") in message
    assert "hf auth login" in message and "HF_TOKEN" in message


def test_gated_model_with_a_token_downloads(fake_hub, monkeypatch, repos):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = hub.resolve_model(GATED_ID)
    assert same_weights(folder, repos[GATED_ID].commits[repos[GATED_ID].refs["main"]])


def test_repository_without_weights_is_refused(fake_hub):
    with pytest.raises(MRCError, match=r"someone/not-a-model .* has no config.json and weights"):
        hub.resolve_model("someone/not-a-model")
    assert not list(fake_hub.cache.rglob("README.md"))


def test_hub_down_and_nothing_cached(fake_hub):
    fake_hub.down = True
    with pytest.raises(MRCError, match=r"cannot reach http://127\.0\.0\.1:\d+ .* not in the hub cache .*HF_ENDPOINT"):
        hub.resolve_model("someone/tiny-electra")


def test_connection_dropped_mid_file_resumes_with_range(fake_hub, repos):
    fake_hub.cut["model.safetensors"] = 1
    folder = hub.resolve_model("someone/tiny-electra")
    repo = repos["someone/tiny-electra"]
    assert same_weights(folder, repo.commits[repo.refs["main"]])
    assert gets(fake_hub, "model.safetensors") == 2
    assert not list(fake_hub.cache.rglob("*.incomplete"))


def test_connection_that_keeps_dropping_is_a_clean_error_then_a_retry_works(fake_hub, repos, monkeypatch):
    monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda s: None)  # its 1 s pause per retry
    fake_hub.cut["model.safetensors"] = 100
    with pytest.raises(MRCError) as info:
        hub.resolve_model("someone/tiny-electra")
    assert "someone/tiny-electra (revision main) on " + fake_hub.url in str(info.value)
    assert "run the same command again" in str(info.value)
    snapshot = next((fake_hub.cache / "models--someone--tiny-electra" / "snapshots").iterdir())
    assert not (snapshot / "model.safetensors").exists()  # nothing half-written under a final name
    fake_hub.cut.clear()
    folder = hub.resolve_model("someone/tiny-electra")
    assert same_weights(folder, repos["someone/tiny-electra"].commits[repos["someone/tiny-electra"].refs["main"]])


@pytest.mark.parametrize("failure, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the disk of .* --cache_dir"),
    (OSError(errno.EACCES, "Permission denied"), "failed .*Permission denied.* writable"),
])
def test_disk_errors_name_the_cache_and_what_to_do(fake_hub, monkeypatch, failure, message):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(hub, "snapshot_download", fail)
    with pytest.raises(MRCError, match=message):
        hub.resolve_model("someone/tiny-electra")


def test_local_folders_and_bad_names(tmp_path):
    (tmp_path / "m").mkdir()
    assert hub.resolve_model(tmp_path / "m") == tmp_path / "m"
    with pytest.raises(MRCError, match="--revision v1 applies to hub ids"):
        hub.resolve_model(tmp_path / "m", revision="v1")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MRCError, match="is a file"):
        hub.resolve_model(tmp_path / "f")
    with pytest.raises(MRCError, match="--model .*nowhere/deeper: no such folder, and not a hub id"):
        hub.resolve_model(tmp_path / "nowhere" / "deeper", flag="--model")


def test_files_to_fetch_takes_one_weights_format():
    common = ["config.json", "vocab.txt", "tokenizer_config.json", "README.md", "tf_model.h5"]
    assert hub.files_to_fetch(common + ["pytorch_model.bin", "model.safetensors"]) == [
        "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"]
    sharded = ["pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin"]
    assert hub.files_to_fetch(common + sharded)[1:4] == [
        "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    with pytest.raises(ValueError, match="weights"):
        hub.files_to_fetch(common)


# ---------------------------------------------------------------------------------------------
# The CLIs


def test_predict_and_download_take_a_hub_id(fake_hub, tmp_path, capsys):
    answer = predict.run(predict.PredictConfig(model="someone/tiny-electra", question="누가 왔나?",
                                               context="철수가 학교에 왔다.", device="cpu")).answer
    assert answer is not None
    capsys.readouterr()
    done = download.main(["koelectra-base-v3", "--revision", "v1", "--dir", str(tmp_path / "plain")])
    assert sorted(done) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert load_model(tmp_path / "plain", report=None)


def test_eval_analyze_measures_lengths_with_a_hub_models_tokenizer(fake_hub, small_korquad, tmp_path, capsys):
    dev = small_korquad / "KorQuAD_v1.0_dev.json"
    articles = json.loads(dev.read_text())["data"]
    questions = [qa for article in articles for p in article["paragraphs"] for qa in p["qas"]]
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({qa["id"]: "아니다" for qa in questions[:5]}, ensure_ascii=False))
    analysis.run(analysis.EvalConfig(dataset=str(dev), predictions=str(predictions), analyze=True,
                                     model="someone/tiny-electra", revision="v1"), given=frozenset())
    assert "lengths are counted in characters" not in capsys.readouterr().err
    assert gets(fake_hub, "vocab.txt") == 1 and (tmp_path / "error_analysis.csv").is_file()


def train_cmd(out: Path, data_dir: Path, *extra: str) -> list[str]:
    """The README's recipe, literally (the seed's hub id, served by the fake hub); `extra` adds --max_steps etc."""
    return ["--model_type", "electra", "--model_name_or_path", SEED_ID,
            "--output_dir", str(out), "--data_dir", str(data_dir),
            "--train_file", "KorQuAD_v1.0_train.json", "--predict_file", "KorQuAD_v1.0_dev.json",
            "--do_train", "--do_eval", "--evaluate_during_training", "--eval_all_checkpoints",
            "--max_seq_length", "512", "--doc_stride", "128", "--max_query_length", "64",
            "--per_gpu_train_batch_size", "16", "--learning_rate", "5e-5", "--num_train_epochs", "3",
            "--n_best_size", "20", "--max_answer_length", "30", "--logging_steps", "1000", "--save_steps", "1000",
            "--seed", "42", "--fp16", *extra]


@pytest.fixture(scope="module")
def small_korquad(tmp_path_factory, korquad_train_subset, korquad_dev) -> Path:
    """data/ with the seed's file names: two articles of train, one of dev."""
    folder = tmp_path_factory.mktemp("data")
    for name, source, articles in (("KorQuAD_v1.0_train.json", korquad_train_subset, 2),
                                   ("KorQuAD_v1.0_dev.json", korquad_dev, 1)):
        data = json.loads(source.read_text(encoding="utf-8"))
        (folder / name).write_text(json.dumps({**data, "data": data["data"][:articles]}, ensure_ascii=False),
                                   encoding="utf-8")
    return folder


def test_seed_command_line_fails_cleanly_then_the_same_command_succeeds(fake_hub, small_korquad, repos, tmp_path):
    out = tmp_path / "koelectra-base-v3-korquad"
    args = train_cmd(out, small_korquad, "--max_steps", "2", "--features_cache_dir", str(tmp_path / "windows"))
    fake_hub.down = True
    first = subprocess.run([sys.executable, "train.py", *args], cwd=REPO_ROOT, env={**ENV, **hub_env(fake_hub)},
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 2, first.stderr
    assert first.stderr.count("error: ") == 1 and "Traceback" not in first.stderr
    assert f"{SEED_ID}: cannot reach {fake_hub.url}" in first.stderr
    assert not out.exists()  # nothing written that would block the retry
    fake_hub.down = False
    second = subprocess.run([sys.executable, "train.py", *args], cwd=REPO_ROOT, env={**ENV, **hub_env(fake_hub)},
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    commit = repos[SEED_ID].refs["main"]
    assert f"revision main = commit {commit}" in second.stderr + second.stdout
    saved = json.loads((out / "training_args.json").read_text())
    assert saved["model_commit"] == commit and saved["model_name_or_path"] == SEED_ID
    assert json.loads((out / "eval_results.json").read_text())
    assert load_model(out, report=None)


def hub_env(state: HubState) -> dict[str, str]:
    return {"HF_ENDPOINT": state.url, "HF_HUB_CACHE": str(state.cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def test_torchrun_two_ranks_download_once_into_the_seeds_cache_dir(fake_hub, small_korquad, tmp_path):
    out = tmp_path / "ddp"
    args = train_cmd(out, small_korquad, "--max_steps", "1", "--no-fp16", "--no-do_eval",
                     "--no-evaluate_during_training", "--no-eval_all_checkpoints", "--per_gpu_train_batch_size", "2",
                     "--max_seq_length", "128", "--doc_stride", "48", "--max_query_length", "32",
                     "--features_cache_dir", str(tmp_path / "w"), "--cache_dir", str(tmp_path / "seed-cache"))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), "train.py", *args],
                            cwd=REPO_ROOT, env={**ENV, **hub_env(fake_hub)}, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        assert gets(fake_hub, name) == 1, (name, fake_hub.requests)
    assert gets(fake_hub, "pytorch_model.bin") == 0
    # --cache_dir as in run_squad.py: where the downloaded model goes, instead of HF_HUB_CACHE
    assert (tmp_path / "seed-cache" / "models--monologg--koelectra-base-v3-discriminator").is_dir()
    assert not fake_hub.cache.exists()
    assert (out / "model.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
