"""How large a `charlm viz` page is, and how long it takes, at each activation precision.

    .venv/bin/python benchmarks/viz_size.py runs/ptb_cpu --chars 5000
    .venv/bin/python benchmarks/viz_size.py RUN --chars 200 --bits 4 8 --data-root DIR

Writes one page per --bits into a temporary folder and prints, for each: the file's size, the
part of it that is the activations (the blob, deflated, in base64) and the seconds the command
took (model stepping included; one run each). Figures from this machine are in the README.
"""

from __future__ import annotations

import argparse
import base64
import re
import tempfile
import time
import zlib
from pathlib import Path

from charlm.viz.build import visualize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--chars", type=int, default=5000)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--data-root", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'bits':>4}  {'page MB':>8}  {'blob MB':>8}  {'blob raw MB':>11}  {'seconds':>7}")
        for bits in args.bits:
            out = Path(folder) / f"page{bits}.html"
            began = time.perf_counter()
            page = visualize_run(args.run, out, split=args.split, chars=args.chars, bits=bits, data_root=args.data_root)
            took = time.perf_counter() - began
            blob = re.search(r'id="charlm-blob">(.*?)</script>', out.read_text(encoding="utf-8"), re.S).group(1)
            raw = len(zlib.decompress(base64.b64decode(blob)))
            print(
                f"{bits:>4}  {page.size_bytes / 1e6:>8.2f}  {len(blob) / 1e6:>8.2f}  {raw / 1e6:>11.2f}  {took:>7.1f}"
            )
        print(f"{page.chars:,} characters, {page.units:,} units, {page.bpc:.4f} bpc; checkpoint {page.checkpoint}")


if __name__ == "__main__":
    main()
