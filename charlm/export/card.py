"""The model card (README.md) written beside an export: what the model is, how it was
trained and measured, and the command that reproduces it."""

from __future__ import annotations

from pathlib import Path

from charlm.inference.trained import TrainedModel
from charlm.runs.rundir import RunDir


def model_card(trained: TrainedModel, run: Path, files: list[str], use: tuple[str, ...] = ()) -> str:
    """The card; `use`: lines saying how to run this format's files (markdown)."""
    cfg, m = trained.cfg, trained.cfg.model
    summary = _summary(run)
    valid = summary.get("best_valid_bpc")
    test = summary["test"].get("bpc") if isinstance(summary.get("test"), dict) else None
    scores = [
        f"- best valid BPC {valid:.4f} (the split scored in training, batch {cfg.train.eval_batch_size})"
        if isinstance(valid, float)
        else "- valid BPC: not recorded",
        f"- test BPC {test:.4f} (batch {cfg.train.test_batch_size}, one stateful stream per row, as `charlm eval`)"
        if isinstance(test, float)
        else "- test BPC: not recorded",
    ]
    return "\n".join(
        [
            f"# charlm model: {m.cell} {m.num_layers}x{m.hidden_size} on {cfg.data.corpus}",
            "",
            f"- cell {m.cell} ({m.impl}), {m.num_layers} layers of {m.hidden_size} units, embedding {m.embedding_dim}"
            f"{', tied decoder' if m.tie_weights else ''}; {trained.model.num_parameters():,} parameters",
            f"- corpus {cfg.data.corpus}, unit {trained.vocab.unit}, vocabulary {len(trained.vocab)}",
            f"- checkpoint {trained.path.name}, step {trained.step:,}, {trained.weights} weights",
            *scores,
            "",
            "Files: " + ", ".join(files) + ".",
            "",
            f"Reproduce: `charlm train --config config.yaml` with the run's config ({trained.path.parent.name}/config.yaml).",
            *use,
            "",
        ]
    )


def _summary(run: Path) -> dict:
    try:
        return RunDir(run if run.is_dir() else run.parent).read_summary()
    except (OSError, ValueError):  # no summary (a bare checkpoint file), or a damaged one: no scores
        return {}
