"""mrc/report.py: report.html shows the run's own numbers, and its images are valid PNGs of the plotted series."""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mrc.errors import MRCError

pytest.importorskip("matplotlib")
from mrc.report import ANALYSIS, RECORDED_NOT_FLAGS, REPORT, main, write_report  # noqa: E402  (needs matplotlib at call time only)


class Page(HTMLParser):
    """Tables by id (rows of (data-value, text) cells) and images (alt, src) of a report."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str | None, str]]]] = {}
        self.images: list[tuple[str, str]] = []
        self.external: list[str] = []
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])
        if tag == "script" and "src" in attrs:
            self.external.append(attrs["src"])
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td" and self._table is not None:
            self._cell = [attrs.get("data-value"), ""]
        elif tag == "img":
            self.images.append((attrs["alt"], attrs["src"]))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._table[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def png_chunks(data: bytes) -> dict[bytes, list[bytes]]:
    """Every chunk of a PNG, after checking the signature, each CRC and the IHDR/IEND framing."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, list[bytes]] = {}
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.setdefault(kind, []).append(body)
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in chunks
    return chunks


def png_series(data: bytes) -> dict:
    for body in png_chunks(data).get(b"tEXt", []):
        key, _, value = body.partition(b"\0")
        if key == b"Series":
            return json.loads(value.decode("latin-1"))
    raise AssertionError("no Series chunk")


def decoded_pixels(data: bytes) -> np.ndarray:
    from PIL import Image  # matplotlib depends on pillow
    import io

    image = Image.open(io.BytesIO(data))
    image.verify()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance).any())


C0, C1 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two colours: the plotted lines and bars


def make_run(folder: Path, *, epochs: int, steps_per_epoch: int, log_every: int, evaluated: bool,
             analysis: bool) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(epochs * 100 + log_every)
    total = epochs * steps_per_epoch
    lines = []
    for step in range(log_every, total + 1, log_every):
        entry = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": float(4 * np.exp(-step / 40)
                 + rng.random() * 0.1), "lr": 5e-5 * (1 - step / total), "grad_norm": float(rng.random() * 3),
                 "loss_scale": 65536.0, "skipped_steps": 0, "tokens_per_s": float(rng.integers(1000, 9000))}
        if evaluated:
            entry |= {"eval_exact_match": float(step / total * 80), "eval_f1": float(step / total * 90)}
        lines.append(json.dumps(entry))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 9', encoding="utf-8")  # a cut line
    if evaluated:
        results = {str(s): {"exact_match": s / total * 80, "f1": s / total * 90 - (s == total) * 50, "total": 30.0,
                            "missing": 0.0} for s in range(log_every, total + 1, log_every)}
        best = max(results, key=lambda k: results[k]["f1"])
        (folder / "eval_results.json").write_text(json.dumps({**results, "best": best}))
    (folder / "training_args.json").write_text(json.dumps({"learning_rate": 5e-5, "train_file": ["a.json"],
                                                           "fp16": True, "save_total_limit": None}))
    if analysis:
        words = ["누구", "언제", "무엇", "other"]
        (folder / ANALYSIS).write_text(json.dumps({
            "dataset": "dev.json", "predictions": "predictions_30.json", "exact_match": 50.0, "f1": 60.0,
            "f1_threshold": 0.85, "unit": "tokens", "breakdowns": [
                {"title": "by question word", "rows": [{"label": w, "questions": 10 + i, "exact_match": 20.0 * i,
                                                        "f1": 20.0 * i + 10, "errors": i} for i, w in enumerate(words)]},
                {"title": "by answer length (tokens)", "rows": [{"label": "1", "questions": 3, "exact_match": 66.7,
                                                                 "f1": 70.0, "errors": 1}]}]}, ensure_ascii=False))
    return folder


RUNS = {
    "one epoch, evaluated, analysed": dict(epochs=1, steps_per_epoch=50, log_every=10, evaluated=True, analysis=True),
    "three epochs, evaluated": dict(epochs=3, steps_per_epoch=30, log_every=5, evaluated=True, analysis=False),
    "two epochs, no evaluation": dict(epochs=2, steps_per_epoch=40, log_every=8, evaluated=False, analysis=False),
}


@pytest.mark.parametrize("name", RUNS)
def test_report_numbers_equal_the_run_files_and_images_plot_them(name, tmp_path):
    run = make_run(tmp_path / "run", **RUNS[name])
    spec = RUNS[name]
    path = write_report(run)
    assert path == run / REPORT
    page = Page(path.read_text(encoding="utf-8"))
    assert page.external == []  # self-contained: opens from disk with no server or network

    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]]
    rows = page.tables["metrics"][1:]
    assert len(rows) == len(logged)
    for row, entry in zip(rows, logged):
        assert [float(v) for v, _ in row] == [float(entry[k]) for k in entry]  # every logged value, exactly

    images = {alt: base64.b64decode(src.split(",", 1)[1]) for alt, src in page.images
              if src.startswith("data:image/png;base64,")}
    assert len(images) == len(page.images)
    boundaries = [float(spec["steps_per_epoch"] * k) for k in range(1, spec["epochs"])]
    for alt, key in (("loss", "loss"), ("learning rate", "lr"), ("gradient norm", "grad_norm")):
        series = png_series(images[alt])
        assert series["x"] == [e["step"] for e in logged] and series["y"][key] == [e[key] for e in logged]
        assert series["epoch_boundaries"] == pytest.approx(boundaries)
        pixels = decoded_pixels(images[alt])
        assert pixels.shape == (320, 900, 3) and has_colour(pixels, C0)

    if spec["evaluated"]:
        results = json.loads((run / "eval_results.json").read_text())
        scored = {k: v for k, v in results.items() if k != "best"}
        table = page.tables["evals"][1:]
        assert [(row[0][1].rstrip(" ★"), float(row[1][0]), float(row[2][0])) for row in table] == \
            [(k, v["exact_match"], v["f1"]) for k, v in scored.items()]
        assert [row[0][1].endswith("★") for row in table] == [k == results["best"] for k in scored]
        series = png_series(images["EM/F1 per evaluated step"])
        assert series["y"]["f1"] == [v["f1"] for v in scored.values()] and series["best"] == results["best"]
        assert has_colour(decoded_pixels(images["EM/F1 per evaluated step"]), C1)
    else:
        assert "evals" not in page.tables and "No evaluation" in path.read_text()

    if spec["analysis"]:
        analysis = json.loads((run / ANALYSIS).read_text())
        for i, breakdown in enumerate(analysis["breakdowns"]):
            table = page.tables[f"breakdown-{i}"][1:]
            assert [[row[0][1]] + [float(v) for v, _ in row[1:]] for row in table] == \
                [[r["label"], r["questions"], r["exact_match"], r["f1"], r["errors"]] for r in breakdown["rows"]]
            series = png_series(images[breakdown["title"]])
            assert series["x"] == [r["label"] for r in breakdown["rows"]]
            assert series["y"]["f1"] == [r["f1"] for r in breakdown["rows"]]
            pixels = decoded_pixels(images[breakdown["title"]])
            assert has_colour(pixels, C0) and has_colour(pixels, C1)  # the F1 and EM bars
    else:
        assert "breakdown-0" not in page.tables

    flags = page.tables["flags"]
    args = json.loads((run / "training_args.json").read_text())
    expected = [(f"--{k}", v) for k, v in args.items() if k not in RECORDED_NOT_FLAGS]
    expected += [(label, args[k]) for k, label in RECORDED_NOT_FLAGS.items() if label and k in args]
    assert [(row[0][1], json.loads(row[1][1])) for row in flags] == expected


def test_train_py_wrote_the_report_of_its_run(unattended_run):
    page = Page((unattended_run / REPORT).read_text(encoding="utf-8"))
    logged = [json.loads(line) for line in (unattended_run / "metrics.jsonl").read_text().splitlines()]
    assert [float(row[0][0]) for row in page.tables["metrics"][1:]] == [e["step"] for e in logged]
    assert [float(row[2][0]) for row in page.tables["metrics"][1:]] == [e["loss"] for e in logged]
    results = json.loads((unattended_run / "eval_results.json").read_text())
    assert [float(row[2][0]) for row in page.tables["evals"][1:]] == [v["f1"] for k, v in results.items()
                                                                       if k != "best"]
    names = [row[0][1] for row in page.tables["flags"]]
    args = json.loads((unattended_run / "training_args.json").read_text())
    assert "train_sources" in args and "--train_sources" not in names  # a recorded table, not a flag
    assert "--model_name_or_path" in names and RECORDED_NOT_FLAGS["model_commit"] in names


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("empty", "no metrics.jsonl, eval_results.json or training_args.json"),
    ("input as output", "is one of the report's inputs"),
    ("analysis as output", "is one of the report's inputs"),
    ("exists", "already exists; pass --overwrite"),
    ("bad json", "eval_results.json: not valid JSON at line 1"),
])
def test_bad_report_requests_give_one_error_line_and_write_nothing(case, message, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [str(run)]
    if case != "missing":
        run.mkdir()
    if case in ("input as output", "analysis as output", "exists", "bad json"):
        (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 0.1, "loss": 2.0}\n')
    if case == "input as output":
        argv += ["--out", str(run / "metrics.jsonl")]
    if case == "analysis as output":
        (tmp_path / "a.json").write_text('{"breakdowns": []}')
        argv += ["--analysis", str(tmp_path / "a.json"), "--out", str(tmp_path / "a.json")]
    if case == "exists":
        (run / REPORT).write_text("mine")
    if case == "bad json":
        (run / "eval_results.json").write_text("{oops")
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert case == "exists" and (run / REPORT).read_text() == "mine" or not (run / REPORT).exists()
    assert case != "analysis as output" or (tmp_path / "a.json").read_text() == '{"breakdowns": []}'


def test_without_matplotlib_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run", epochs=1, steps_per_epoch=10, log_every=5, evaluated=False, analysis=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MRCError, match=r"pip install -e '\.\[report\]'"):
        write_report(run)
    with pytest.raises(SystemExit):
        main([str(run)])
    assert "the report needs matplotlib" in capsys.readouterr().err and not (run / REPORT).exists()


def test_train_py_without_matplotlib_says_how_to_get_the_report(tmp_path, monkeypatch, capsys):
    import torch

    from mrc.dist import DistContext
    from mrc.report import write_report_of_run
    from mrc.reporting import Reporter

    run = make_run(tmp_path / "run", epochs=1, steps_per_epoch=10, log_every=5, evaluated=False, analysis=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = Reporter(DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    write_report_of_run(run, report.say)
    err = capsys.readouterr().err
    assert "report.html not written" in err and "pip install -e '.[report]'" in err and not (run / REPORT).exists()


@pytest.mark.parametrize("fonts", ["installed", "none"])
def test_question_word_charts_never_draw_missing_glyphs(fonts, tmp_path, monkeypatch):
    import warnings

    import mrc.report

    if fonts == "none":
        monkeypatch.setattr(mrc.report, "HANGUL_FONTS", ())  # as on a server without a Hangul font
    run = make_run(tmp_path / "run", epochs=1, steps_per_epoch=10, log_every=5, evaluated=False, analysis=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report(run)
    assert not [w for w in caught if "missing from font" in str(w.message) or "Glyph" in str(w.message)]
