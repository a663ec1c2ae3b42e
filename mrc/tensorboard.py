"""`--report_to tensorboard`: the logged scalars as TensorBoard event files under `output_dir/runs/`.

The seed's run_squad.py wrote `loss`, `lr` and `eval_<metric>` at every logging step; the same
tags come out here, plus ours. Every entry of metrics.jsonl becomes one scalar per tag below, at
its `step`. `torch.utils.tensorboard` needs the `tensorboard` package, an optional extra
(`pip install -e '.[tensorboard]'`): asking for it without the package fails before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrc.errors import MRCError

REPORT_TO = ("none", "tensorboard")
RUNS_DIR = "runs"

# metrics.jsonl key -> TensorBoard tag. The first four are the seed's names.
TAGS = {
    "loss": "loss",
    "lr": "lr",
    "eval_exact_match": "eval_exact_match",
    "eval_f1": "eval_f1",
    "epoch": "epoch",
    "grad_norm": "grad_norm",
    "loss_scale": "loss_scale",
    "skipped_steps": "skipped_steps",
    "tokens_per_s": "tokens_per_s",
}


def require(report_to: str) -> None:
    """Fail now, with the install command, when --report_to names a package that is missing."""
    if report_to != "tensorboard":
        return
    try:
        import tensorboard  # noqa: F401  (optional dependency: only --report_to tensorboard needs it)
    except ImportError:
        raise MRCError("--report_to tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                       "(or pip install tensorboard), or drop --report_to") from None


class TensorBoardLog:
    """A Reporter sink writing each metrics entry as scalars; a resumed run purges the steps it redoes."""

    def __init__(self, output_dir: Path, resumed_step: int):
        from torch.utils.tensorboard import SummaryWriter  # optional dependency (the tensorboard package)

        self.writer = SummaryWriter(log_dir=str(Path(output_dir) / RUNS_DIR),
                                    purge_step=resumed_step + 1 if resumed_step else None)

    def __call__(self, entry: dict[str, Any]) -> None:
        step = int(entry["step"])
        for key, tag in TAGS.items():
            value = entry.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # logging steps are minutes apart: a crash loses nothing logged

    def close(self) -> None:
        self.writer.close()
