"""SHA-RNN's speed beside the LSTM's: `charlm bench` of each model, in fresh processes, interleaved.

    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/sha_rnn_speed.py              # the PTB recipes
    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/sha_rnn_speed.py --rounds 1 --steps 5  # quicker

Three models on the PTB-char shapes of configs/ptb_cpu.yaml (batch 64 x 128, bf16, eval batch
128): the SHA-RNN recipe (configs/ptb_sha_rnn_cpu.yaml), the 2x512 LSTM recipe
(configs/ptb_cpu.yaml), and a 2-layer LSTM widened to the SHA-RNN's parameter count. Each
`charlm bench --json` runs in a fresh process, the models interleaved, `--rounds` times; the table
gives medians: training chars/s (charlm's loop), evaluation at batch 1 and 128, one sample, and
peak memory. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("train_chars_per_s", "train chars/s"),
    ("eval_chars_per_s_batch1", "eval batch 1"),
    ("eval_chars_per_s", "eval batch 128"),
    ("sample_chars_per_s", "1 sample chars/s"),
    ("peak_memory_mb", "peak memory MB"),
)


def equal_lstm_hidden(target: int, vocab: int = 50) -> int:
    """The hidden size of ptb_cpu's 2-layer LSTM whose parameter count is nearest `target`."""
    from charlm.config import ModelConfig
    from charlm.models.size import parameter_count

    def count(h: int) -> int:
        return parameter_count(vocab, ModelConfig(cell="lstm", embedding_dim=128, hidden_size=h, num_layers=2))

    return min(range(64, 2048, 8), key=lambda h: abs(count(h) - target))


def models() -> list[tuple[str, str, list[str]]]:
    from charlm.config import load_config
    from charlm.models.size import parameter_count

    sha = load_config(REPO / "configs" / "ptb_sha_rnn_cpu.yaml")
    hidden = equal_lstm_hidden(parameter_count(50, sha.model))
    return [
        ("SHA-RNN, ptb_sha_rnn_cpu.yaml", "configs/ptb_sha_rnn_cpu.yaml", []),
        ("LSTM 2x512, ptb_cpu.yaml", "configs/ptb_cpu.yaml", []),
        (f"LSTM 2x{hidden} (SHA-RNN's parameters)", "configs/ptb_cpu.yaml", [f"model.hidden_size={hidden}"]),
    ]


def bench(config: str, overrides: list[str], steps: int) -> dict:
    sets = [a for o in overrides for a in ("--set", o)]
    command = [sys.executable, "-m", "charlm", "bench", "--config", config, *sets, "--steps", str(steps), "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per model (medians)")
    parser.add_argument("--steps", type=int, default=10, help="charlm bench --steps")
    args = parser.parse_args()
    runs = models()
    figures: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
    for _ in range(args.rounds):
        for name, config, overrides in runs:
            figures[name].append(bench(config, overrides, args.steps))
    from charlm.config import load_config
    from charlm.models.size import parameter_count

    print("| model | parameters | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("| --- " * (len(COLUMNS) + 2) + "|")
    for name, config, overrides in runs:
        params = parameter_count(50, load_config(REPO / config, overrides).model)
        cells = [f"{statistics.median(f[key] for f in figures[name]):,.0f}" for key, _ in COLUMNS]
        print(f"| {name} | {params:,} | " + " | ".join(cells) + " |")
    print(f"\n{figures[runs[0][0]][0]['device']}; medians of {args.rounds} fresh processes per model, interleaved")


if __name__ == "__main__":
    main()
