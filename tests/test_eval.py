"""eval.py: the CLI a user runs after predict.py, and the seed's Python API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mrc.data import read_examples

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eval import analyze_result, evaluate_result, main  # noqa: E402  (eval.py sits at the repository root)


@pytest.fixture
def predictions(korquad_train_subset, tmp_path) -> Path:
    """Right answers for all but the last question, which gets a wrong one."""
    examples, _ = read_examples(korquad_train_subset)
    answers = {ex.id: ex.answers[0].text for ex in examples}
    answers[examples[-1].id] = "전혀 다른 답"
    path = tmp_path / "preds" / "predictions.json"
    path.parent.mkdir()
    path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    return path


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_cli_prints_the_result_json_last_and_writes_it_beside_the_predictions(korquad_train_subset, predictions):
    proc = subprocess.run([sys.executable, "eval.py", str(korquad_train_subset), str(predictions)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    assert result == {"exact_match": pytest.approx(100 * 141 / 142), "f1": pytest.approx(100 * 141 / 142),
                      "total": 142, "missing": 0}
    assert "exact match" in proc.stdout        # the table
    written = json.loads((predictions.parent / "predictions.eval.json").read_text())
    assert written == result


def test_missing_file_is_an_error_message_without_traceback(tmp_path, korquad_train_subset):
    proc = subprocess.run([sys.executable, "eval.py", str(korquad_train_subset), str(tmp_path / "none.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "none.json" in proc.stderr and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_json_and_bad_threshold_exit_2(tmp_path, korquad_train_subset, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{'a': 1}", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main([str(korquad_train_subset), str(bad)])
    assert exit_info.value.code == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(korquad_train_subset), str(bad), "--f1_threshold", "85"])
    assert exit_info.value.code == 2
    assert "0..1 scale" in capsys.readouterr().err


def test_missing_predictions_are_counted_and_named(korquad_train_subset, tmp_path, capsys):
    examples, _ = read_examples(korquad_train_subset)
    path = tmp_path / "p.json"
    answers = {ex.id: ex.answers[0].text for ex in examples[2:]}
    path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    main([str(korquad_train_subset), str(path)])
    out = capsys.readouterr()
    assert last_json_line(out.out)["missing"] == 2
    assert examples[0].id in out.err and examples[1].id in out.err


def test_analyze_writes_the_csv_to_out_and_prints_breakdowns(korquad_train_subset, predictions, tmp_path, capsys,
                                                            koelectra_folder):
    out_dir = tmp_path / "report"
    main([str(korquad_train_subset), str(predictions), "--analyze", "--model", str(koelectra_folder),
          "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert (out_dir / "error_analysis.csv").is_file() and (out_dir / "predictions.eval.json").is_file()
    for title in ("by answer length (tokens)", "by context length (tokens)", "by question word", "partial overlap"):
        assert title in out
    assert last_json_line(out)["total"] == 142


def test_analyze_takes_window_and_decode_settings_from_the_models_training_args(korquad_train_subset, predictions,
                                                                               tmp_path, capsys, koelectra_folder):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(koelectra_folder / name, model / name)
    (model / "training_args.json").write_text(json.dumps({"max_seq_length": 128, "doc_stride": 48,
                                                                 "max_answer_length": 3}))
    main([str(korquad_train_subset), str(predictions), "--analyze", "--model", str(model), "--out", str(tmp_path),
          "--max_answer_length", "4"])
    captured = capsys.readouterr()
    assert re.search(r"max_seq_length[\s│]+128[\s│]+training_args.json", captured.err)
    assert re.search(r"max_answer_length[\s│]+4[\s│]+flag", captured.err)
    assert re.search(r"max_query_length[\s│]+64[\s│]+default", captured.err)
    assert "by answer length vs --max_answer_length 4 (tokens)" in captured.out
    assert "by windows per context at --max_seq_length 128" in captured.out
    examples, _ = read_examples(korquad_train_subset)
    rows = {line.split("│")[1].strip(): int(line.split("│")[2].replace(",", ""))
            for line in captured.out.splitlines() if line.count("│") == 6 and "window" in line.split("│")[1]}
    assert sum(rows.values()) == len(examples) and rows["several windows"] > 0   # 128-token windows cut many


def test_analyze_without_model_says_lengths_are_characters(korquad_train_subset, predictions, capsys):
    main([str(korquad_train_subset), str(predictions), "--analyze"])
    captured = capsys.readouterr()
    assert "characters" in captured.err
    assert "by answer length (characters)" in captured.out


def test_seed_api(korquad_train_subset, predictions):
    scores = evaluate_result(str(korquad_train_subset), str(predictions))
    assert set(scores) == {"exact_match", "f1"}
    assert scores["exact_match"] == pytest.approx(100 * 141 / 142)
    rows = analyze_result(str(korquad_train_subset), str(predictions), 0.85, None)
    assert len(rows) == 1 and rows[0]["prediction"] == "전혀 다른 답"
    assert (predictions.parent / "error_analysis.csv").is_file()
