"""mrc/model_card.py: every saved model folder has a Hub model card that says what it is and how it was made."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from mrc.config import to_dict
from mrc.model_card import DatasetRef, hub_id_of, license_of
from mrc.train_state import model_checkpoints
from conftest import cli_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
yaml = pytest.importorskip("yaml")  # PyYAML comes with transformers (the test extra)


def card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def saved_folders(run: Path) -> list[tuple[Path, str]]:
    """(folder, label of its scores in eval_results.json) for the final model and every kept checkpoint."""
    best = json.loads((run / "eval_results.json").read_text())["best"]
    return [(run, best)] + [(folder, str(step)) for step, folder in model_checkpoints(run)]


def test_every_saved_folder_has_a_card_with_its_measured_scores(unattended_run):
    results = json.loads((unattended_run / "eval_results.json").read_text())
    folders = saved_folders(unattended_run)
    assert len(folders) == 1 + len(model_checkpoints(unattended_run)) >= 3
    for folder, label in folders:
        meta, body = card(folder)
        assert meta["language"] == ["ko"] and meta["pipeline_tag"] == "question-answering"
        assert meta["datasets"] == ["squad_kor_v1"]
        (result,) = meta["model-index"][0]["results"]
        assert result["task"]["type"] == "question-answering"
        assert result["dataset"]["type"] == "squad_kor_v1" and result["dataset"]["split"] == "validation[:30]"
        measured = {m["type"]: m["value"] for m in result["metrics"]}
        assert measured == {"exact_match": round(results[label]["exact_match"], 2),
                            "f1": round(results[label]["f1"], 2)}
        assert f"| {results[label]['exact_match']:.2f} | {results[label]['f1']:.2f} |" in body
        assert "AutoModelForQuestionAnswering.from_pretrained" in body and "python predict.py --model" in body
    _, final_body = card(unattended_run)
    assert f"the weights of checkpoint-{results['best']}" in final_body or results["best"] == "50"


def test_the_card_command_reproduces_the_training_flags(unattended_run):
    cli = cli_module("train")
    _, body = card(unattended_run)
    command = body.split("```bash\n")[2].split("\n```")[0]  # the second bash block: the training command
    argv = shlex.split(command)
    assert argv[:2] == ["python", "train.py"]
    rebuilt = to_dict(cli.parse_args(argv[2:]))
    saved = json.loads((unattended_run / "training_args.json").read_text())
    # Not flags: the resolved hub commit (in the card too) and the per-source data table (training_args.json only).
    assert rebuilt == {k: v for k, v in saved.items() if k not in ("model_commit", "train_sources")}
    assert saved["train_sources"][0]["questions"] > 0
    for k, v in saved.items():
        if k != "train_sources":
            assert f"| `{k}` | `{json.dumps(v, ensure_ascii=False)}` |" in body


def test_the_base_model_id_and_license_come_from_the_base_folder(koelectra_folder, tmp_path):
    assert hub_id_of(str(koelectra_folder), koelectra_folder) == "monologg/koelectra-base-v3-discriminator"
    assert license_of(koelectra_folder) == "apache-2.0"
    cached = tmp_path / "hub" / "models--klue--bert-base" / "snapshots" / "abc123"
    cached.mkdir(parents=True)
    assert hub_id_of("klue/bert-base", cached) == "klue/bert-base"
    assert hub_id_of(str(cached), cached) == "klue/bert-base"
    mine = tmp_path / "my-model"
    mine.mkdir()
    assert hub_id_of(str(mine), mine) is None and license_of(mine) is None


@pytest.mark.parametrize("path, max_samples, hub_id, split", [
    ("data/KorQuAD_v1.0_dev.json", None, "squad_kor_v1", "validation"),
    ("data/KorQuAD_v1.0_train.json", None, "squad_kor_v1", "train"),
    ("klue-mrc-v1.1_dev.json", 100, "klue", "validation[:100]"),
    ("aihub_mrc_valid.jsonl", None, None, "validation"),
    ("my_questions.jsonl", None, None, "my_questions.jsonl"),
])
def test_dataset_names_and_splits(path, max_samples, hub_id, split):
    ref = DatasetRef.of(path, max_samples)
    assert (ref.hub_id, ref.split) == (hub_id, split)


def test_the_card_predict_commands_parse_with_predict_py(unattended_run):
    from mrc.config import parse_config
    from mrc.predict import PredictConfig

    _, body = card(unattended_run)
    lines = body.split("```bash\n")[1].split("\n```")[0].splitlines()
    assert len(lines) == 2
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["python", "predict.py"]
        cfg = parse_config(PredictConfig, argv[2:], description="")
        assert Path(cfg.model) == unattended_run


@pytest.mark.parametrize("flags", [
    [],
    ["--fp16", "--no-group_by_length", "--learning_rate", "3e-05", "--train_file", "a.json", "b.jsonl:0.5"],
    ["--bf16", "--save_total_limit", "3", "--save_only_model", "--report_to", "tensorboard", "--neg_ratio", "0.25"],
    ["--evaluate_during_training", "--predict_file", "dev.json", "--load_best_model_at_end", "--logging_steps", "100",
     "--save_steps", "200", "--max_seq_length", "384", "--version_2_with_negative", "--max_eval_samples", "7"],
])
def test_to_argv_rebuilds_the_same_config(flags):
    from mrc.config import to_argv

    cli = cli_module("train")
    base = ["--model_name_or_path", "m", "--output_dir", "o", "--do_train"]
    cfg = cli.parse_args(base + (flags if "--train_file" in flags else [*flags, "--train_file", "t.json"]))
    assert to_dict(cli.parse_args(to_argv(cfg))) == to_dict(cfg)


def test_the_card_transformers_snippet_runs(unattended_run, capsys):
    pytest.importorskip("transformers")
    _, body = card(unattended_run)
    snippet = body.split("```python\n")[1].split("\n```")[0]
    context = "1989년 2월 15일 여의도 농민 폭력 시위를 주도한 혐의로 지명수배되었다."
    exec(snippet.replace('"...", "..."', f'"언제 지명수배되었나?", "{context}"'), {})
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and printed.count("\n") == 1  # one decoded span (the model is untrained)
