"""The README.md model card of every saved model folder, in the Hugging Face Hub's format.

A YAML header (language, pipeline tag, base model, datasets, and the measured EM/F1 with the
dataset and split they were measured on, as a `model-index`), then what the folder holds, the
scores, how to load it (predict.py, `transformers.AutoModelForQuestionAnswering`), the command
that reproduces it and the resolved training flags. The YAML is written by hand (no YAML
library at run time): every string goes out as a JSON string, which YAML reads as is.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrc.config import to_argv
from mrc.hub import KNOWN_MODELS, looks_like_hub_id
from mrc.io import atomic_write_text

CARD = "README.md"

# Files of the known sets -> (hub dataset id, display name); matched on the lower-cased file name.
KNOWN_DATASETS = (("korquad", "squad_kor_v1", "KorQuAD 1.0"), ("klue", "klue", "KLUE MRC"))


@dataclass(frozen=True)
class DatasetRef:
    """A data file as the card names it."""

    path: str
    hub_id: str | None       # a Hub dataset id when the file is a known set
    name: str
    split: str

    @classmethod
    def of(cls, path: str, max_samples: int | None = None) -> DatasetRef:
        file = Path(path).name
        lower = file.lower()
        hub_id, name = next(((h, n) for key, h, n in KNOWN_DATASETS if key in lower), (None, Path(path).stem))
        split = ("validation" if re.search(r"dev|valid", lower) else "test" if "test" in lower
                 else "train" if "train" in lower else file)
        return cls(path, hub_id, name, f"{split}[:{max_samples}]" if max_samples else split)


@dataclass(frozen=True)
class CardInfo:
    """What every card of a run shares; the scores and the folder's role differ per folder."""

    training_args: dict[str, Any]
    command: str                     # reproduces the run
    base_model: str                  # --model_name_or_path as given
    base_model_id: str | None        # its Hub id, when known
    license: str | None              # the base model's, from its own card
    train_sets: tuple[DatasetRef, ...] = ()
    eval_set: DatasetRef | None = None
    run_name: str = "model"
    world_size: int = 1
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval_results.json, live (rank 0)


def hub_id_of(name_or_path: str, folder: Path) -> str | None:
    """The Hub id of a base model: as given, from its HF cache path, or a known downloaded folder."""
    if looks_like_hub_id(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        return name_or_path
    match = re.search(r"models--([^/]+)--([^/]+)/snapshots/", str(Path(folder).resolve()))
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    known = {hub_id.split("/")[-1]: hub_id for hub_id in KNOWN_MODELS}
    return known.get(Path(folder).resolve().name)


def license_of(folder: Path) -> str | None:
    """The `license:` of a model folder's own card header, if it has one."""
    card = Path(folder) / CARD
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    header = text.split("\n---", 1)[0] if text.startswith("---") else ""
    match = re.search(r"^license:\s*['\"]?([\w.+-]+)", header, flags=re.MULTILINE)
    return match.group(1) if match else None


def reproduce_command(argv: list[str], world_size: int) -> str:
    launcher = ["python"] if world_size == 1 else ["torchrun", "--nproc_per_node", str(world_size)]
    return shlex.join([*launcher, "train.py", *argv])


def _q(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def yaml_header(info: CardInfo, scores: dict[str, Any] | None) -> str:
    lines = ["---", "language:", "- ko"]
    if info.license:
        lines.append(f"license: {_q(info.license)}")
    lines += ["library_name: transformers", "pipeline_tag: question-answering",
              "tags:", "- question-answering", "- korean", "- mrc"]
    if info.base_model_id:
        lines.append(f"base_model: {_q(info.base_model_id)}")
    hub_sets = sorted({d.hub_id for d in (*info.train_sets, *([info.eval_set] if info.eval_set else [])) if d.hub_id})
    if hub_sets:
        lines += ["datasets:", *(f"- {_q(d)}" for d in hub_sets)]
    if scores and info.eval_set is not None and "f1" in scores:
        ev = info.eval_set
        lines += ["metrics:", "- exact_match", "- f1", "model-index:", f"- name: {_q(info.run_name)}", "  results:",
                  "  - task:", "      type: question-answering", "      name: Question Answering",
                  "    dataset:", f"      name: {_q(ev.name)}", f"      type: {_q(ev.hub_id or ev.name)}",
                  f"      split: {_q(ev.split)}",
                  "    metrics:",
                  "    - type: exact_match", f"      value: {round(float(scores['exact_match']), 2)}",
                  "      name: Exact Match (official KorQuAD v1.0 script)",
                  "    - type: f1", f"      value: {round(float(scores['f1']), 2)}",
                  "      name: F1 (official KorQuAD v1.0 script)"]
    return "\n".join(lines + ["---", ""])


def render_card(info: CardInfo, *, label: str | None, role: str, folder_name: str) -> str:
    """The whole README.md; `label` names this folder's entry in `info.results` ("300"), `role` what it is."""
    scores = info.results.get(label) if label is not None else None
    args = info.training_args
    base = f"`{info.base_model_id}`" if info.base_model_id else f"the model in `{info.base_model}`"
    train = ", ".join(f"`{d.path}`" for d in info.train_sets) or "(none)"
    parts = [yaml_header(info, scores),
             f"# {info.run_name}\n",
             f"Extractive question answering (Korean), fine-tuned from {base} on {train} with this "
             f"repository's `train.py`. This folder is {role}.\n",
             "## Results\n"]
    if scores and info.eval_set is not None:
        parts.append(f"Official KorQuAD v1.0 metric on `{info.eval_set.path}` (split `{info.eval_set.split}`, "
                     f"{scores.get('total', '?')} questions):\n\n| exact match | F1 |\n|---:|---:|\n"
                     f"| {float(scores['exact_match']):.2f} | {float(scores['f1']):.2f} |\n")
    else:
        parts.append("Not evaluated (no `--predict_file` score for this folder).\n")
    parts += [
        "## How to use\n",
        "With this repository:\n",
        f"```bash\npython predict.py --model {shlex.quote(folder_name)} --input questions.json --output preds/\n"
        f"python predict.py --model {shlex.quote(folder_name)} --question \"...\" --context \"...\"\n```\n",
        "With `transformers` (the folder is an ordinary `ElectraForQuestionAnswering` / "
        "`BertForQuestionAnswering` checkpoint; this takes the best single span of one window, where "
        "predict.py searches every window of a long context):\n",
        "```python\nimport torch\nfrom transformers import AutoModelForQuestionAnswering, AutoTokenizer\n\n"
        f"model = AutoModelForQuestionAnswering.from_pretrained({_q(folder_name)}).eval()\n"
        f"tokenizer = AutoTokenizer.from_pretrained({_q(folder_name)})\n"
        "question, context = \"...\", \"...\"\n"
        "inputs = tokenizer(question, context, return_tensors=\"pt\", truncation=\"only_second\", max_length=512)\n"
        "with torch.no_grad():\n    out = model(**inputs)\n"
        "start = int(out.start_logits[0].argmax())\n"
        "end = start + int(out.end_logits[0, start:start + 30].argmax())\n"
        "print(tokenizer.decode(inputs[\"input_ids\"][0, start:end + 1]))\n```\n",
        "## Training\n",
        f"Reproduce it ({info.world_size} process(es); the global batch is "
        f"{args.get('per_gpu_train_batch_size')} x {args.get('gradient_accumulation_steps')} x {info.world_size} "
        "windows per step):\n",
        f"```bash\n{info.command}\n```\n",
        "The resolved flags (also in `training_args.json`):\n",
        "| flag | value |\n|---|---|\n" + "".join(f"| `{k}` | `{_q(v)}` |\n" for k, v in args.items()
                                                 if k != "train_sources"),  # a table, printed by train.py
    ]
    return "\n".join(parts)


def write_card(folder: Path, info: CardInfo, *, label: str | None, role: str, folder_name: str | None = None) -> None:
    """Write (or rewrite) `folder`/README.md atomically."""
    atomic_write_text(Path(folder) / CARD,
                      render_card(info, label=label, role=role, folder_name=folder_name or Path(folder).name))


def run_card_info(cfg: Any, training_args: dict[str, Any], model_folder: Path, results: dict[str, dict[str, Any]],
                  world_size: int) -> CardInfo:
    """The card of a training run: `cfg` is its TrainConfig, `training_args` what training_args.json holds,
    `model_folder` the resolved base model."""
    argv = to_argv(cfg, leave_out=frozenset({"resume", "overwrite_output_dir", "local_rank"}))
    return CardInfo(training_args=training_args, command=reproduce_command(argv, world_size),
                    base_model=cfg.model_name_or_path, base_model_id=hub_id_of(cfg.model_name_or_path, model_folder),
                    license=license_of(model_folder),
                    train_sets=tuple(DatasetRef.of(str(f.path)) for f in cfg.train_files),
                    eval_set=DatasetRef.of(str(cfg.predict_path), cfg.max_eval_samples) if cfg.predict_file else None,
                    run_name=Path(cfg.output_dir).resolve().name, world_size=world_size, results=results)
