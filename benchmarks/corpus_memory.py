"""How preparing and training on a text corpus scale with its size: seconds and peak memory.

    .venv/bin/python benchmarks/corpus_memory.py                  # 10M 100M 1G (bytes, decimal)
    .venv/bin/python benchmarks/corpus_memory.py --sizes 2M 5M    # a quick smoke run

For each size it generates a synthetic English-like corpus (random words from a fixed list,
with punctuation, a few accented words and newlines; deterministic: a smaller size is a prefix
of a larger one) under the work folder, then measures, each in a fresh child process so that
one figure never inherits another's memory:

  prep    charlm.data.corpora.load_corpus on a fresh data root: the streaming preparation into
          token files (data/prepare.py); seconds inside the child, and its peak RSS
  load    the same call again: opening the prepared folder (manifest checks and the scan of every
          token file for ids beyond the vocabulary)
  train   `charlm train` for a few steps of a tiny model on the prepared corpus, its peak RSS
  import  a child that only imports charlm and torch: the floor under every other figure

Peak RSS is the child's own ru_maxrss (os.wait4), which counts the pages of the memory-mapped
token files it touched. A corpus-size-independent train RSS is the point: the token files are
mapped, not read. valid and test are 500,000 characters each for every size (data.split chosen
to give that): evaluation works on chunks of up to 65,536 tokens, so a held-out split that grew
with the corpus would make the figures differ by evaluation memory (bounded, about 80 MB here),
not by the corpus; with the default 5% each the passes would also dominate the run's time.

Needs disk for the corpus and its token files (about 2x the largest size, uint8 ids); generated
corpora are kept in the work folder and reused. The 1G size takes several minutes (mostly
generation, once, and preparation) and must run on an otherwise idle machine for its figures to
mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = 500_000  # characters of valid and of test, whatever the corpus size


def split_for(size: int) -> list[float]:
    """data.split giving valid and test HELD_OUT characters each (at most 5% each): the same
    evaluation work, and the same evaluation memory, for every corpus size, so that the train
    figures differ only by the training split."""
    held = min(HELD_OUT / size, 0.05)
    return [1 - 2 * held, held, held]


STEPS = 5
GENERATOR_VERSION = 1  # bump when the generated text changes, so old corpora are not reused

WORDS = (
    "the of and to a in is that it was for on are as with his they be at one have this from or had "
    "by word but what some we can out other were all there when up use your how said an each she which "
    "do their time if will way about many then them write would like so these her long make thing see "
    "him two has look more day could go come did number sound no most people my over know water than "
    "call first who may down side been now find any new work part take get place made live where after "
    "back little only round man year came show every good me give our under name very through just form "
    "sentence great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large spell add "
    "even land here must big high such follow act why ask men change went light kind off need house "
    "picture try us again animal point mother world near build self earth father head stand own page "
    "should country found answer school grow study still learn plant cover food sun four between state "
    "keep eye never last let thought city tree cross farm hard start might story saw far sea draw left "
    "late run while press close night real life few north open seem together next white children begin "
    "got walk example ease paper group always music those both mark often letter until mile river car "
    "feet care second book carry took science eat room friend began idea fish mountain stop once base "
    "hear horse cut sure watch color face wood main enough plain girl usual young ready above ever red "
    "list though feel talk bird soon body dog family direct pose leave song measure door product black "
    "short numeral class wind question happen complete ship area half rock order fire south problem piece "
    "told knew pass since top whole king space heard best hour better true during hundred five remember "
    "step early hold west ground interest reach fast verb sing listen six table travel less morning ten "
    "simple several vowel toward war lay against pattern slow center love person money serve appear road "
    "map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark "
    "machine note wait plan figure star box noun field rest correct able pound done beauty drive stood "
    "contain front teach week final gave green oh quick develop ocean warm free minute strong special "
    "mind behind clear tail produce fact street inch multiply nothing course stay wheel full force blue "
    "object decide surface deep moon island foot system busy test record boat common gold possible plane "
    "café naïve façade résumé déjà über señor cliché coöperate Zürich"
).split()
# Tokens after which the generator ends a sentence or a line, and their weights among the words.
PUNCTUATION = {",": 6.0, ".": 5.0, ";": 0.5, "?": 0.6, "!": 0.4, " —": 0.2, ":": 0.3}
NEWLINE_WEIGHT = 1.2


def parse_size(text: str) -> int:
    """'10M' -> 10_000_000 (decimal units K, M, G; a plain number is bytes)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500K, 10M, 1G, 123456)")
    number, unit = match.groups()
    size = int(float(number) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[unit])
    if size < 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is too small: at least 10K, so every split has text")
    return size


def show_size(size: int) -> str:
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return str(size)


def generate_corpus(path: Path, size: int, seed: int = 0) -> None:
    """Write `size` bytes of English-like UTF-8 text, chunk by chunk at constant memory; kept
    and reused when a previous run wrote the same size with the same generator."""
    marker = path.with_suffix(".json")
    wanted = {"size": size, "seed": seed, "generator": GENERATOR_VERSION}
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted and path.stat().st_size == size:
        return
    rng = random.Random(seed)
    tokens = WORDS + [p for p in PUNCTUATION] + ["\n"]
    weights = [1.0] * len(WORDS) + list(PUNCTUATION.values()) + [NEWLINE_WEIGHT]
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    started = time.perf_counter()
    written = 0
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        while written < size:
            picked = rng.choices(tokens, cum_weights=cumulative, k=200_000)
            text = (
                " ".join(picked)
                .replace(" \n ", "\n")
                .replace(" ,", ",")
                .replace(" .", ".")
                .replace(" ;", ";")
                .replace(" ?", "?")
                .replace(" !", "!")
                .replace(" :", ":")
            )
            data = text.encode("utf-8")
            data = data[: size - written]
            if written + len(data) == size:
                # Never end inside a multi-byte character (the corpus must be valid UTF-8): pad
                # with spaces instead, keeping the exact size.
                kept = data.decode("utf-8", "ignore").encode("utf-8")
                data = kept + b" " * (len(data) - len(kept))
            f.write(data)
            written += len(data)
    os.replace(partial, path)
    marker.write_text(json.dumps(wanted))
    print(f"  generated {show_size(size)} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


LOAD = """
import json, sys, time
from charlm.config import DataConfig
from charlm.data.corpora import load_corpus
cfg = DataConfig(corpus="text", path=sys.argv[1], split=json.loads(sys.argv[2]), unit="char", root=sys.argv[3])
started = time.perf_counter()
corpus = load_corpus(cfg)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "vocab": len(corpus.vocab), "dtype": str(corpus.train.dtype),
                  "tokens": [len(corpus.train), len(corpus.valid), 0 if corpus.test is None else len(corpus.test)]}))
"""
IMPORT_ONLY = "import torch, charlm.data.corpora, charlm.data.prepare, charlm.training.trainer"


def run_child(args: list[str], log: Path, timeout: float) -> tuple[int, float, str]:
    """Run a child to completion; (exit code, its own peak RSS in MB, its stdout)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        return proc.returncode, usage.ru_maxrss / 1024, out.read()  # ru_maxrss: KiB on Linux


def train_config(corpus: Path, root: Path, threads: int | None) -> dict:
    return {
        "data": {
            "corpus": "text",
            "path": str(corpus),
            "split": split_for(corpus.stat().st_size),
            "unit": "char",
            "root": str(root),
        },
        "model": {"cell": "lstm", "embedding_dim": 16, "hidden_size": 64, "num_layers": 1},
        "train": {
            "batch_size": 8,
            "seq_len": 64,
            "max_steps": STEPS,
            "eval_every": 1000,
            "log_every": STEPS,
            "eval_batch_size": 64,
            "test_batch_size": 64,
            "device": "cpu",
            "seed": 1,
            "schedule": "constant",
            "loggers": ["jsonl"],
            **({"threads": threads} if threads else {}),
        },
    }


def measure(size: int, work: Path, threads: int | None, timeout: float) -> dict:
    corpus = work / f"corpus-{show_size(size)}.txt"
    generate_corpus(corpus, size)
    root = work / f"data-{show_size(size)}"
    shutil.rmtree(root, ignore_errors=True)  # a real preparation, not a reuse
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    row: dict = {"size": size}
    load = [sys.executable, "-c", LOAD, str(corpus), json.dumps(split_for(corpus.stat().st_size)), str(root)]
    for phase in ("prep", "load"):
        code, rss, out = run_child(load, logs / f"{phase}-{show_size(size)}.log", timeout)
        if code != 0:
            raise SystemExit(
                f"{phase} of {show_size(size)} failed (exit {code}); see {logs / f'{phase}-{show_size(size)}.log'}"
            )
        figures = json.loads(out.strip().splitlines()[-1])
        row[f"{phase}_s"], row[f"{phase}_rss_mb"] = figures["seconds"], rss
        row.update(vocab=figures["vocab"], dtype=figures["dtype"], tokens=figures["tokens"])
    config = work / f"train-{show_size(size)}.yaml"
    config.write_text(yaml.safe_dump(train_config(corpus, root, threads), sort_keys=False))
    run_dir = work / f"run-{show_size(size)}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    code, rss, _ = run_child(
        [sys.executable, "-m", "charlm", "train", "--config", str(config), "--out-dir", str(run_dir)],
        logs / f"train-{show_size(size)}.log",
        timeout,
    )
    if code != 0:
        raise SystemExit(
            f"training on {show_size(size)} failed (exit {code}); see {logs / f'train-{show_size(size)}.log'}"
        )
    row["train_s"], row["train_rss_mb"] = time.perf_counter() - started, rss
    return row


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return f"{model}; {os.cpu_count()} cores ({affinity} usable){memory}{load}"


def table(rows: list[dict], floor_mb: float) -> str:
    base = rows[0]
    head = (
        f"{'corpus':>8} {'prep s':>8} {'prep MB/s':>9} {'prep RSS':>9} {'load s':>7} {'load RSS':>9} "
        f"{'train s':>8} {'train RSS':>9} {'RSS/corpus':>10} {'RSS/base':>8} {'prep RSS/base':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{show_size(r['size']):>8} {r['prep_s']:>8.2f} {r['size'] / 1e6 / r['prep_s']:>9.1f} "
            f"{r['prep_rss_mb']:>7.0f}MB {r['load_s']:>7.2f} {r['load_rss_mb']:>7.0f}MB {r['train_s']:>8.1f} "
            f"{r['train_rss_mb']:>7.0f}MB {r['train_rss_mb'] * 2**20 / r['size']:>10.2f} "
            f"{r['train_rss_mb'] / base['train_rss_mb']:>8.2f} {r['prep_rss_mb'] / base['prep_rss_mb']:>13.2f}"
        )
    lines.append("")
    lines.append(
        f"RSS in MiB (ru_maxrss of each child). Floor: a child importing charlm and torch peaks at "
        f"{floor_mb:.0f} MB. RSS/corpus = train peak RSS / corpus bytes; RSS/base = train peak RSS / "
        f"the {show_size(base['size'])} corpus's (the baseline); prep RSS/base likewise for preparation."
    )
    lines.append(
        f"prep s and load s are load_corpus inside the child (no interpreter start); train s is the "
        f"whole `charlm train` process ({STEPS} steps, then valid and test passes over "
        f"{HELD_OUT:,} characters each, whatever the corpus size)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[parse_size(s) for s in ("10M", "100M", "1G")],
        help="corpus sizes in bytes, decimal units (default: 10M 100M 1G); the first is the baseline",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "charlm-corpus-memory",
        help="where corpora, token files and runs go (default: %(default)s); generated corpora are reused",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="train.threads for the training child (default: PyTorch's)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    needed = 2.1 * max(args.sizes)
    free = shutil.disk_usage(args.work).free
    if free < needed:
        raise SystemExit(
            f"{args.work} has {free / 1e9:.1f} GB free; the largest size needs about {needed / 1e9:.1f} GB"
        )

    print(f"machine: {machine()}", flush=True)
    print(
        f"python {platform.python_version()}, torch {__import__('torch').__version__}, work folder {args.work}",
        flush=True,
    )
    code, floor_mb, _ = run_child([sys.executable, "-c", IMPORT_ONLY], args.work / "import.log", args.timeout)
    if code != 0:
        raise SystemExit(f"importing charlm failed; see {args.work / 'import.log'}")
    rows = []
    for size in args.sizes:
        print(f"{show_size(size)}: generating, preparing, loading, training ...", file=sys.stderr, flush=True)
        rows.append(measure(size, args.work, args.threads, args.timeout))
        r = rows[-1]
        print(f"  vocabulary {r['vocab']} ({r['dtype']}), tokens train/valid/test {r['tokens']}", file=sys.stderr)
    print()
    print(table(rows, floor_mb))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "import_rss_mb": floor_mb, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
