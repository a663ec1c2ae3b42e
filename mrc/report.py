"""`python -m mrc.report RUN_DIR`: one self-contained report.html of a training run.

Reads what a run leaves in its output_dir: metrics.jsonl (training curves), eval_results.json
(EM/F1 per evaluated step), training_args.json (the resolved flags) and, when `eval.py --analyze`
wrote it there, error_analysis.json (the breakdowns). Plots are PNGs drawn with matplotlib (an
optional extra: `pip install -e '.[report]'`) and embedded as base64, so the file opens from disk
in any browser with no server. Every number shown is also in a table cell whose `data-value`
holds it exactly, and every PNG carries the series it plots in a `Series` text chunk (JSON).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from mrc.config import field, parse_config
from mrc.errors import MRCError, cli_entry
from mrc.io import atomic_write_text

REPORT = "report.html"
ANALYSIS = "error_analysis.json"
INSTALL = "pip install -e '.[report]' (or pip install matplotlib)"

# Question words of the analysis -> English, for chart labels when no Hangul font is installed.
GLOSS = {"누구": "who", "언제": "when", "어디": "where", "무엇": "what", "몇": "how many", "어떤": "which/what kind",
         "어느": "which", "왜": "why", "어떻게": "how", "other": "other"}
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum", "Malgun Gothic", "AppleGothic")


@dataclass(frozen=True)
class ReportConfig:
    """python -m mrc.report: the run's curves, scores, error breakdowns and flags in one HTML file."""

    run_dir: str = field(help="a train.py --output_dir (metrics.jsonl, eval_results.json, training_args.json)",
                         positional=True)
    out: str | None = field(None, "where to write the HTML (default RUN_DIR/report.html)")
    analysis: str | None = field(None, "error_analysis.json of eval.py --analyze (default RUN_DIR/error_analysis.json "
                                 "when present)")
    overwrite: bool = field(False, "replace an existing report file")


@dataclass
class RunData:
    """What the report shows, read from the run folder."""

    run_dir: Path
    metrics: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]]   # step label -> scores
    best: str | None
    args: dict[str, Any]
    analysis: dict[str, Any] | None
    skipped_lines: int = 0


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """metrics.jsonl entries (a line cut short by a crash is skipped and counted)."""
    if not path.is_file():
        return [], 0
    entries, skipped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(entry, dict) and "step" in entry:
            entries.append(entry)
    return entries, skipped


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MRCError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}; rerun what wrote it") from None
    if not isinstance(data, dict):
        raise MRCError(f"{path}: must hold a JSON object")
    return data


def step_order(label: str) -> tuple[float, str]:
    return (int(label) if label.isdigit() else math.inf, label)


def load_run(run_dir: Path, analysis: Path | None = None) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MRCError(f"{run_dir}: no such folder; pass a train.py --output_dir")
    metrics, skipped = read_metrics(run_dir / "metrics.jsonl")
    results = read_json(run_dir / "eval_results.json") or {}
    evals = {k: v for k, v in results.items() if isinstance(v, dict) and "f1" in v}
    args = read_json(run_dir / "training_args.json") or {}
    if not (metrics or evals or args):
        raise MRCError(f"{run_dir}: no metrics.jsonl, eval_results.json or training_args.json; pass the "
                       "--output_dir of a train.py run")
    analysis_path = Path(analysis) if analysis else run_dir / ANALYSIS
    if analysis and not analysis_path.is_file():
        raise MRCError(f"--analysis {analysis}: no such file (eval.py --analyze writes {ANALYSIS})")
    best = results.get("best") if isinstance(results.get("best"), str) else None
    return RunData(run_dir, metrics, dict(sorted(evals.items(), key=lambda kv: step_order(kv[0]))), best, args,
                   read_json(analysis_path), skipped)


def epoch_boundaries(metrics: list[dict[str, Any]]) -> list[float]:
    """Steps where an epoch ends before the last logged step, interpolated between logged (step, epoch) pairs."""
    points = [(0.0, 0.0)] + [(float(e["step"]), float(e["epoch"])) for e in metrics if "epoch" in e]
    found = []
    for (s0, e0), (s1, e1) in zip(points, points[1:]):
        for k in range(math.floor(e0) + 1, math.floor(e1) + 1):
            found.append(s0 + (k - e0) / (e1 - e0) * (s1 - s0) if e1 > e0 else s1)
    return [step for step in found if step < points[-1][0]]


# -- plots


def _pyplot():
    try:
        import matplotlib  # optional dependency: the [report] extra
    except ImportError:
        raise MRCError(f"the report needs matplotlib: {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency, as above
    from matplotlib import font_manager  # optional dependency, as above

    installed = {f.name for f in font_manager.fontManager.ttflist}
    hangul = [name for name in HANGUL_FONTS if name in installed]
    plt.rcParams["font.family"] = [*hangul, "DejaVu Sans"]
    return plt, bool(hangul)


def png(fig, series: dict[str, Any]) -> bytes:
    """The figure as PNG bytes, with the plotted series as JSON in its `Series` text chunk."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Series": json.dumps(series), "Software": "mrc.report"})
    return buffer.getvalue()


def curve_png(plt, metrics: list[dict[str, Any]], key: str, title: str, boundaries: list[float]) -> bytes | None:
    points = [(e["step"], e[key]) for e in metrics if isinstance(e.get(key), (int, float)) and math.isfinite(e[key])]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.plot(xs, ys, color="C0", marker="o" if len(xs) < 40 else None, markersize=3, linewidth=1.5, label=key)
    for i, step in enumerate(boundaries):
        ax.axvline(step, color="0.55", linestyle="--", linewidth=1, label="epoch boundary" if i == 0 else None)
    ax.set(title=title, xlabel="optimizer step", ylabel=key)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    data = png(fig, {"x": xs, "y": {key: ys}, "epoch_boundaries": boundaries})
    plt.close(fig)
    return data


def scores_png(plt, evals: dict[str, dict[str, Any]], best: str | None) -> bytes | None:
    steps = [k for k in evals if k.isdigit()]
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    xs = [int(k) for k in steps]
    em, f1 = [evals[k]["exact_match"] for k in steps], [evals[k]["f1"] for k in steps]
    ax.plot(xs, f1, color="C0", marker="o", label="F1")
    ax.plot(xs, em, color="C1", marker="s", label="exact match")
    if best in steps:
        ax.scatter([int(best)], [evals[best]["f1"]], s=160, facecolors="none", edgecolors="C3", linewidths=2,
                   label=f"best F1 (step {best})", zorder=3)
    ax.set(title="dev EM / F1 per evaluated step", xlabel="optimizer step", ylabel="score (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    data = png(fig, {"x": xs, "y": {"f1": f1, "exact_match": em}, "best": best})
    plt.close(fig)
    return data


def breakdown_png(plt, breakdown: dict[str, Any], hangul: bool) -> bytes:
    rows = breakdown["rows"]
    labels = [r["label"] if hangul or r["label"] not in GLOSS else GLOSS[r["label"]] for r in rows]
    em, f1 = [r["exact_match"] for r in rows], [r["f1"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.0))
    xs = list(range(len(rows)))
    ax.bar([x - 0.2 for x in xs], em, width=0.4, color="C1", label="exact match")
    ax.bar([x + 0.2 for x in xs], f1, width=0.4, color="C0", label="F1")
    for x, r in zip(xs, rows):
        ax.annotate(f"n={r['questions']:,}", (x, max(r["f1"], r["exact_match"])), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs, labels, fontsize=8)
    pad = max(0.0, (3 - len(rows)) / 2)  # one or two buckets keep bars of the usual width
    ax.set_xlim(-0.6 - pad, len(rows) - 0.4 + pad)
    ax.set(title=breakdown["title"], ylabel="score (%)", ylim=(0, 110))
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    data = png(fig, {"x": [r["label"] for r in rows], "y": {"exact_match": em, "f1": f1},
                     "questions": [r["questions"] for r in rows]})
    plt.close(fig)
    return data


# -- HTML


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num_cell(value: Any, fmt: str = "{:.2f}") -> str:
    """A table cell showing `value` formatted, with the exact value in data-value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{esc(value)}</td>"
    shown = fmt.format(value) if math.isfinite(value) else str(value)
    return f'<td class="n" data-value="{esc(repr(value))}">{esc(shown)}</td>'


def img(data: bytes | None, alt: str) -> str:
    if data is None:
        return f"<p class='none'>{esc(alt)}: nothing logged.</p>"
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


METRIC_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "loss_scale", "skipped_steps", "tokens_per_s",
                  "eval_exact_match", "eval_f1")
FORMATS = {"step": "{:,}", "epoch": "{:.2f}", "loss": "{:.4f}", "lr": "{:.2e}", "grad_norm": "{:.3f}",
           "loss_scale": "{:g}", "skipped_steps": "{:,}", "tokens_per_s": "{:,.0f}"}


def metrics_table(metrics: list[dict[str, Any]]) -> str:
    columns = [c for c in METRIC_COLUMNS if any(c in e for e in metrics)]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(num_cell(e[c], FORMATS.get(c, "{:.2f}")) if c in e else "<td></td>"
                                    for c in columns) + "</tr>\n" for e in metrics)
    return f'<table id="metrics"><tr>{head}</tr>\n{body}</table>'


def evals_table(evals: dict[str, dict[str, Any]], best: str | None, run_dir: Path, best_is_final: bool) -> str:
    rows = []
    for label, scores in evals.items():
        folder = run_dir / f"checkpoint-{label}"
        where = f"checkpoint-{label}" if folder.is_dir() else ("(deleted or never saved)" if label.isdigit() else "")
        if best_is_final and label == best:
            where += " = the final model (--load_best_model_at_end)"
        mark = " best" if label == best else ""
        rows.append(f'<tr class="{mark.strip()}"><td>{esc(label)}{" ★" if mark else ""}</td>'
                    f"{num_cell(scores.get('exact_match'))}{num_cell(scores.get('f1'))}"
                    f"{num_cell(scores.get('total'), '{:,.0f}')}<td>{esc(where)}</td></tr>\n")
    return ('<table id="evals"><tr><th>step</th><th>exact match</th><th>F1</th><th>questions</th>'
            f"<th>folder</th></tr>\n{''.join(rows)}</table>")


def breakdown_table(index: int, breakdown: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{esc(r['label'])}</td>{num_cell(r['questions'], '{:,}')}{num_cell(r['exact_match'])}"
                   f"{num_cell(r['f1'])}{num_cell(r['errors'], '{:,}')}</tr>\n" for r in breakdown["rows"])
    return (f'<table id="breakdown-{index}" class="small"><tr><th></th><th>questions</th><th>EM</th><th>F1</th>'
            f"<th>errors</th></tr>\n{rows}</table>")


# training_args.json entries that record what a run found rather than a flag it was given.
RECORDED_NOT_FLAGS = {"model_commit": "model commit (resolved --revision)", "train_sources": None}


def flags_table(args: dict[str, Any]) -> str:
    """The flags as `--name value`, then what the run recorded (the per-source table is left to the console)."""
    rows = "".join(f"<tr><td><code>--{esc(k)}</code></td><td><code>{esc(json.dumps(v, ensure_ascii=False))}</code>"
                   f"</td></tr>\n" for k, v in args.items() if k not in RECORDED_NOT_FLAGS)
    rows += "".join(f"<tr><td>{esc(label)}</td><td><code>{esc(json.dumps(args[k], ensure_ascii=False))}</code>"
                    f"</td></tr>\n" for k, label in RECORDED_NOT_FLAGS.items() if label and k in args)
    return f'<table id="flags" class="small">{rows}</table>'


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.best{background:#fff4d6}
img{max-width:100%;display:block;margin:.5em 0}.none,.meta{color:#777}table.small{font-size:.8em}"""


def render(run: RunData, plt, hangul: bool) -> str:
    boundaries = epoch_boundaries(run.metrics)
    last = run.metrics[-1] if run.metrics else {}
    best = run.evals.get(run.best) if run.best else None
    summary = [f"<li>{len(run.metrics):,} logged steps, last step {last.get('step', '-')}, epoch "
               f"{last.get('epoch', '-')}</li>"]
    if best:
        summary.append(f"<li>best dev F1 {best['f1']:.2f} (EM {best['exact_match']:.2f}) at step "
                       f"{esc(run.best)}</li>")
    if run.args.get("load_best_model_at_end"):
        summary.append("<li>--load_best_model_at_end: the final model holds the best checkpoint's weights</li>")
    if run.skipped_lines:
        summary.append(f"<li>{run.skipped_lines} unreadable metrics.jsonl line(s) skipped</li>")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(run.run_dir.name)} - "
             f"training report</title><style>{STYLE}</style></head><body>",
             f"<h1>Training report: {esc(run.run_dir.name)}</h1>",
             f"<p class='meta'>{esc(run.run_dir.resolve())} &middot; written "
             f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by <code>python -m mrc.report</code></p>",
             f"<ul>{''.join(summary)}</ul>", "<h2>Training curves</h2>",
             f"<p class='meta'>dashed lines: epoch boundaries ({len(boundaries)})</p>",
             img(curve_png(plt, run.metrics, "loss", "training loss", boundaries), "loss"),
             img(curve_png(plt, run.metrics, "lr", "learning rate", boundaries), "learning rate"),
             img(curve_png(plt, run.metrics, "grad_norm", "gradient norm (before clipping)", boundaries),
                 "gradient norm"),
             "<h2>Evaluation</h2>"]
    if run.evals:
        parts += [img(scores_png(plt, run.evals, run.best), "EM/F1 per evaluated step"),
                  evals_table(run.evals, run.best, run.run_dir, bool(run.args.get("load_best_model_at_end")))]
    else:
        parts.append("<p class='none'>No evaluation in eval_results.json.</p>")
    parts.append("<h2>Error analysis</h2>")
    if run.analysis:
        a = run.analysis
        parts.append(f"<p>{esc(a.get('predictions', ''))} on {esc(a.get('dataset', ''))}: EM "
                     f"{float(a.get('exact_match', math.nan)):.2f}, F1 {float(a.get('f1', math.nan)):.2f}; error rows: "
                     f"EM 0 and F1 below {esc(a.get('f1_threshold', ''))} (lengths in {esc(a.get('unit', ''))})</p>")
        for i, breakdown in enumerate(a.get("breakdowns", [])):
            parts += [f"<h3>{esc(breakdown['title'])}</h3>", img(breakdown_png(plt, breakdown, hangul),
                                                                   breakdown["title"]), breakdown_table(i, breakdown)]
    else:
        parts.append(f"<p class='none'>No {ANALYSIS}: run <code>python eval.py DEV.json "
                     f"{esc(run.run_dir)}/predictions_STEP.json --analyze --model {esc(run.run_dir)}</code>.</p>")
    parts += ["<h2>Logged steps</h2>", f"<details><summary>{len(run.metrics):,} rows of metrics.jsonl</summary>",
              metrics_table(run.metrics), "</details>",
              "<h2>Resolved flags</h2>", flags_table(run.args) if run.args else "<p class='none'>none</p>",
              "</body></html>\n"]
    return "\n".join(parts)


def write_report(run_dir: Path, out: Path | None = None, *, analysis: Path | None = None,
                 overwrite: bool = True) -> Path:
    """Write the report of `run_dir` (default RUN_DIR/report.html); returns its path."""
    run = load_run(Path(run_dir), analysis)
    out = Path(out) if out else Path(run_dir) / REPORT
    inputs = [Path(run_dir) / name for name in ("metrics.jsonl", "eval_results.json", "training_args.json")]
    inputs.append(Path(analysis) if analysis else Path(run_dir) / ANALYSIS)
    if out.resolve() in {p.resolve() for p in inputs}:
        raise MRCError(f"--out {out} is one of the report's inputs; choose another file")
    if not overwrite and out.exists():
        raise MRCError(f"{out} already exists; pass --overwrite to replace it, or --out another file")
    plt, hangul = _pyplot()
    atomic_write_text(out, render(run, plt, hangul))
    return out


def write_report_of_run(out: Path, say: Callable[[str], None]) -> None:
    """report.html at the end of a training run, when the [report] extra (matplotlib) is installed."""
    try:
        path = write_report(out)
    except MRCError as e:
        say(f"[yellow]report.html not written: {escape(str(e))}[/]")  # escape: '.[report]' is no markup
        return
    say(f"report written to {path}")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ReportConfig, argv, description=ReportConfig.__doc__, prog="python -m mrc.report")
    path = write_report(Path(cfg.run_dir), Path(cfg.out) if cfg.out else None,
                        analysis=Path(cfg.analysis) if cfg.analysis else None, overwrite=cfg.overwrite)
    print(f"report written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
