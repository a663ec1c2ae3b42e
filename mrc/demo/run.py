"""The built-in demo (`make demo`): the whole pipeline on synthetic Korean data, on CPU, in minutes.

1. generate a synthetic KorQuAD-format data set, a WordPiece vocab and an untrained small ELECTRA;
2. train it with the real trainer (`mrc.train.run`, what `train.py` runs) and score the held-out
   paragraphs with the official KorQuAD metric;
3. predict a sample file with `mrc.predict.run` (`predict.py`);
4. score and analyse those predictions with `mrc.analysis.run` (`eval.py --analyze`);
5. print a summary and the commands for the real recipe.

Everything goes to one folder (default `demo_out/`), replaced on every run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from mrc import analysis, predict, train
from mrc.analysis import EvalConfig
from mrc.config import field, from_flat, parse_config, print_config
from mrc.demo.synthetic import SyntheticConfig, write_dataset
from mrc.demo.untrained import train_vocab, write_initial_model
from mrc.errors import MRCError, cli_entry
from mrc.model import ModelConfig
from mrc.predict import PredictConfig
from mrc.train import TrainConfig

# Windows short enough for CPU training; long paragraphs still need two or three of them.
MAX_SEQ_LENGTH = 128
DOC_STRIDE = 64
MAX_QUERY_LENGTH = 32
# The longest synthetic answer is about 12 tokens (a number split into digits); a tighter limit
# than the usual 30 keeps a half-trained model from returning spans that cross sentences.
MAX_ANSWER_LENGTH = 16
TARGET_EM = 80.0
MARKER = ".mrc-demo"  # written into the output folder, so a rerun only ever deletes a demo folder


@dataclass(frozen=True)
class DemoSize:
    """Everything the demo's size changes: data, model shape, training schedule."""

    train_paragraphs: int
    dev_paragraphs: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    epochs: float
    batch_size: int
    learning_rate: float
    dropout: float


SIZES = {
    # One pass over fresh paragraphs (more of them beats more epochs over fewer), from the
    # initialisation of mrc.model.init_for_reading; measured in docs/demo.md.
    "full": DemoSize(train_paragraphs=24000, dev_paragraphs=500, hidden_size=128, num_layers=3, num_heads=4,
                     intermediate_size=256, epochs=1, batch_size=32, learning_rate=1e-3, dropout=0.0),
    # A smoke run of the same code paths for tests and CI; its scores mean nothing.
    "small": DemoSize(train_paragraphs=60, dev_paragraphs=12, hidden_size=32, num_layers=1, num_heads=2,
                      intermediate_size=64, epochs=1, batch_size=16, learning_rate=2e-3, dropout=0.0),
}


@dataclass
class DemoConfig:
    """What `python -m mrc.demo` runs and where it writes."""

    out: Path = field(Path("demo_out"), "folder for everything the demo writes; replaced on every run")
    size: str = field("full", "full: the ~5 minute CPU demo (target: held-out EM >= 80); small: a quick smoke run "
                      "of the same steps (tests, CI)", choices=tuple(SIZES))
    seed: int = field(13, "seed of the data, the vocab, the initial weights and training")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.size not in SIZES:
            raise MRCError(f"--size {self.size!r} is not one of {', '.join(SIZES)}")


@dataclass
class Stage:
    name: str
    seconds: float
    result: str


@dataclass
class DemoResult:
    """What the demo measured and wrote (returned by `run`, shown in the summary)."""

    out: Path
    dev_scores: dict[str, Any]
    sample_scores: dict[str, Any]
    stages: list[Stage] = dc_field(default_factory=list)
    files: dict[str, Path] = dc_field(default_factory=dict)

    @property
    def train_seconds(self) -> float:
        return next((s.seconds for s in self.stages if s.name == "train"), 0.0)


def prepare_out_dir(out: Path) -> None:
    """Empty `out` for a fresh run; refuse to delete a folder the demo did not create."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise MRCError(f"{out} exists and was not written by the demo; delete it or pass --out to another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by python -m mrc.demo; deleted and rewritten on every run\n", encoding="utf-8")


def make_inputs(cfg: DemoConfig, size: DemoSize) -> dict[str, Path]:
    """Synthetic train/dev/sample files, the vocab, and the untrained model folder."""
    syn = SyntheticConfig(seed=cfg.seed, train_paragraphs=size.train_paragraphs, dev_paragraphs=size.dev_paragraphs)
    paths = write_dataset(syn, cfg.out / "data")
    vocab = train_vocab(syn, cfg.out / "tokenizer")
    model_cfg = ModelConfig(vocab_size=vocab.read_text(encoding="utf-8").count("\n"), hidden_size=size.hidden_size,
                            embedding_size=size.hidden_size, num_hidden_layers=size.num_layers,
                            num_attention_heads=size.num_heads, intermediate_size=size.intermediate_size,
                            max_position_embeddings=MAX_SEQ_LENGTH, hidden_dropout_prob=size.dropout,
                            attention_probs_dropout_prob=size.dropout)
    init = write_initial_model(cfg.out / "model_init", cfg.out / "tokenizer", model_cfg, cfg.seed)
    return {**paths, "vocab": vocab, "model_init": init}


def warmup_steps(size: DemoSize) -> int:
    """About 6 % of the steps: a paragraph gives about 5 windows (4 questions, some long paragraphs)."""
    return int(0.06 * size.epochs * 5 * size.train_paragraphs / size.batch_size)


def train_config(cfg: DemoConfig, size: DemoSize, files: dict[str, Path]):
    """The TrainConfig `train.py` would build from the flags printed in the summary."""
    return from_flat(TrainConfig, dict(
        model_name_or_path=str(files["model_init"]), output_dir=str(cfg.out / "model"),
        train_file=[str(files["train"])], predict_file=str(files["dev"]),
        features_cache_dir=str(cfg.out / "cache"),
        do_train=True, do_eval=True, max_seq_length=MAX_SEQ_LENGTH, doc_stride=DOC_STRIDE,
        max_query_length=MAX_QUERY_LENGTH, max_answer_length=MAX_ANSWER_LENGTH,
        per_gpu_train_batch_size=size.batch_size, per_gpu_eval_batch_size=128, learning_rate=size.learning_rate,
        num_train_epochs=size.epochs, warmup_steps=warmup_steps(size), weight_decay=0.01, logging_steps=50,
        save_steps=0, seed=cfg.seed, overwrite_output_dir=True))


def predict_config(cfg: DemoConfig, files: dict[str, Path]):
    return from_flat(PredictConfig, dict(
        model=cfg.out / "model", input=[files["sample"]], output=cfg.out / "predictions",
        max_seq_length=MAX_SEQ_LENGTH, doc_stride=DOC_STRIDE, max_query_length=MAX_QUERY_LENGTH,
        max_answer_length=MAX_ANSWER_LENGTH, features_cache_dir=cfg.out / "cache", overwrite=True))


def eval_config(cfg: DemoConfig, files: dict[str, Path]):
    return from_flat(EvalConfig, dict(
        dataset=str(files["sample"]), predictions=str(cfg.out / "predictions" / "sample.predictions.json"),
        analyze=True, model=str(cfg.out / "model"), out=str(cfg.out / "eval"), max_seq_length=MAX_SEQ_LENGTH,
        doc_stride=DOC_STRIDE, max_query_length=MAX_QUERY_LENGTH, max_answer_length=MAX_ANSWER_LENGTH))


def timed(stages: list[Stage], name: str, console: Console, fn: Callable[[], Any],
          describe: Callable[[Any], str]) -> Any:
    """Run one stage under a banner, record its wall time and a one-line result."""
    console.rule(f"[bold]demo: {name}")
    started = time.perf_counter()
    value = fn()
    stages.append(Stage(name, time.perf_counter() - started, describe(value)))
    return value


def run(cfg: DemoConfig) -> DemoResult:
    """The whole demo; returns the scores, stage times and files (also printed)."""
    console = Console(stderr=True)
    size = SIZES[cfg.size]
    print_config(cfg, "demo")
    prepare_out_dir(cfg.out)
    stages: list[Stage] = []
    files = timed(stages, "synthetic data, vocab, untrained model", console,
                  lambda: make_inputs(cfg, size),
                  lambda f: f"{size.train_paragraphs:,} train / {size.dev_paragraphs:,} held-out paragraphs, "
                            f"{f['vocab'].read_text(encoding='utf-8').count(chr(10)):,} vocab entries")
    dev_scores = timed(stages, "train", console, lambda: train.run(train_config(cfg, size, files)),
                       lambda s: f"held-out EM {s.get('exact_match', float('nan')):.2f} / "
                                 f"F1 {s.get('f1', float('nan')):.2f}")
    timed(stages, "predict", console, lambda: predict.run(predict_config(cfg, files)),
          lambda _: f"{cfg.out / 'predictions' / 'sample.predictions.json'}")
    sample_scores = timed(stages, "eval --analyze", console, lambda: analysis.run(eval_config(cfg, files)),
                          lambda s: f"sample EM {s['exact_match']:.2f} / F1 {s['f1']:.2f}")
    result = DemoResult(cfg.out, dev_scores, sample_scores, stages, written_files(cfg.out))
    print_summary(result, cfg, size, console)
    return result


def written_files(out: Path) -> dict[str, Path]:
    """The files a user looks at after the demo, by what they are."""
    candidates = {
        "training data": out / "data" / "train.json",
        "held-out data": out / "data" / "dev.json",
        "sample to predict": out / "data" / "sample.json",
        "vocab": out / "tokenizer" / "vocab.txt",
        "trained model": out / "model" / "model.safetensors",
        "training log": out / "model" / "metrics.jsonl",
        "held-out scores": out / "model" / "eval_results.json",
        "sample predictions": out / "predictions" / "sample.predictions.json",
        "sample n-best": out / "predictions" / "sample.nbest.json",
        "error analysis": out / "eval" / "error_analysis.csv",
        "sample scores": out / "eval" / "sample.predictions.eval.json",
    }
    return {what: path for what, path in candidates.items() if path.is_file()}


NEXT_STEPS = """\
[bold]Next: the real recipe[/] (KorQuAD 1.0 + KoELECTRA-base-v3; see README)
  python -m mrc.download korquad
  python -m mrc.download koelectra-base-v3
  python train.py --model_name_or_path models/koelectra-base-v3-discriminator --output_dir runs/korquad \\
      --train_file data/korquad/KorQuAD_v1.0_train.json --predict_file data/korquad/KorQuAD_v1.0_dev.json \\
      --do_train --do_eval --max_seq_length 512 --doc_stride 128 --max_query_length 64 \\
      --per_gpu_train_batch_size 16 --learning_rate 5e-5 --num_train_epochs 3 --fp16
  torchrun --nproc_per_node 4 train.py ...same flags...          [dim]# several GPUs[/]
  python predict.py --model runs/korquad --input data/korquad/KorQuAD_v1.0_dev.json --output runs/korquad/pred
  python eval.py data/korquad/KorQuAD_v1.0_dev.json runs/korquad/pred/KorQuAD_v1.0_dev.predictions.json \\
      --analyze --model runs/korquad"""


def print_summary(result: DemoResult, cfg: DemoConfig, size: DemoSize, console: Console) -> None:
    stages = Table(title="demo summary", title_justify="left")
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    stages.add_column("result")
    for stage in result.stages:
        stages.add_row(stage.name, f"{stage.seconds:.1f}", stage.result)
    stages.add_row("total", f"{sum(s.seconds for s in result.stages):.1f}", "")
    console.print(stages)

    em = float(result.dev_scores.get("exact_match", float("nan")))
    if cfg.size == "full":
        verdict = "[green]reached[/]" if em >= TARGET_EM else "[yellow]missed[/]"
        console.print(f"held-out EM {em:.2f}: {verdict} the demo's target of {TARGET_EM:.0f} "
                      f"(training took {result.train_seconds:.0f} s)")
    else:
        console.print(f"size '{cfg.size}' is a smoke run: held-out EM {em:.2f} is not meaningful")

    files = Table(title="files written", title_justify="left")
    files.add_column("what")
    files.add_column("path")
    for what, path in result.files.items():
        files.add_row(what, str(path))
    console.print(files)
    console.print(NEXT_STEPS, soft_wrap=True)  # whole lines, so the commands copy and paste


@cli_entry
def main(argv: list[str] | None = None) -> DemoResult:
    return run(parse_config(DemoConfig, argv, prog="python -m mrc.demo", description=__doc__.splitlines()[0]))


if __name__ == "__main__":
    main()
