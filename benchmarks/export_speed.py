"""How fast the exports generate, beside `charlm sample` on the same machine.

    python benchmarks/export_speed.py RUN [--chars 2000] [--repeats 3]

Exports RUN with --format onnx and web into a temporary folder. step.onnx is driven greedily,
one character per call, in ONNX Runtime (CPU, default threads). The web folder is served on
127.0.0.1 and the
page in headless Chromium in real time (not --dump-dom's virtual time, whose clocks stand
still): the page generates greedily and POSTs its own measured characters per second back to
this script. Then `charlm sample`'s generation (fp32, one sample, greedy) is timed in this
process for the same length. Prints each run and the medians; quiet machine only.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROMPT = "the company"


def page_speed(folder: Path, chars: int, chromium: str) -> tuple[float, str]:
    reports: queue.Queue = queue.Queue()

    class Handler(SimpleHTTPRequestHandler):
        def do_POST(self):  # the page's report: {"chars", "ms", "seed", "text"}
            reports.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = (
        f"http://127.0.0.1:{server.server_address[1]}/index.html?prompt={PROMPT.replace(' ', '%20')}"
        f"&length={chars}&greedy=1&run=1&report=1"
    )
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            report = reports.get(timeout=600)
        finally:
            browser.kill()
            browser.wait()
            server.shutdown()
    return report["chars"] / (report["ms"] / 1000), report["text"]


def sample_speed(run: str, chars: int) -> tuple[float, str]:
    from charlm.inference.sampling_steps import SamplingOptions
    from charlm.inference.trained import load_trained, sample_text

    trained = load_trained(run)
    opts = SamplingOptions(length=chars, greedy=True, seed=1)
    started = time.perf_counter()
    text = sample_text(trained, PROMPT, opts)[0]
    return chars / (time.perf_counter() - started), text


def onnx_speed(folder: Path, run: str, chars: int) -> tuple[float, str]:
    import numpy as np
    import onnxruntime as ort

    from charlm.inference.trained import encode_prompt, load_trained

    session = ort.InferenceSession(str(folder / "step.onnx"), providers=["CPUExecutionProvider"])
    signature = json.loads((folder / "onnx.json").read_text())
    vocab = json.loads((folder / "vocab.json").read_text())
    names = [s["name"] for s in signature["inputs"][1:]]
    state = [np.zeros((s["shape"][0], 1, s["shape"][2]), np.float32) for s in signature["inputs"][1:]]
    started = time.perf_counter()
    for i in encode_prompt(load_trained(run), PROMPT).tolist():
        logits, *state = session.run(None, {"ids": np.array([[i]], np.int64), **dict(zip(names, state))})
    text = []
    for _ in range(chars):
        i = int(logits[0, -1].argmax())
        text.append(vocab["readable"][i])
        logits, *state = session.run(None, {"ids": np.array([[i]], np.int64), **dict(zip(names, state))})
    return chars / (time.perf_counter() - started), "".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chromium = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if chromium is None:
        sys.exit("no Chromium: apt-get install -y chromium")
    from charlm.export import export_run

    with tempfile.TemporaryDirectory() as tmp:
        export_run(args.run, "web", Path(tmp) / "web")
        export_run(args.run, "onnx", Path(tmp) / "onnx")
        speeds: dict[str, list[float]] = {"charlm sample": [], "ONNX Runtime step.onnx": [], "web page": []}
        for i in range(args.repeats):  # interleaved, so a drift in the machine's speed hits all three
            runs = {
                "charlm sample": sample_speed(args.run, args.chars),
                "ONNX Runtime step.onnx": onnx_speed(Path(tmp) / "onnx", args.run, args.chars),
                "web page": page_speed(Path(tmp) / "web", args.chars, chromium),
            }
            reference = runs["charlm sample"][1]
            for name, (speed, _text) in runs.items():
                speeds[name].append(speed)
            print(
                f"round {i + 1}: "
                + ", ".join(f"{name} {speed:,.0f} chars/s" for name, (speed, _) in runs.items())
                + "; first 200 greedy characters equal to charlm's: "
                + ", ".join(f"{name} {text[:200] == reference[:200]}" for name, (_, text) in runs.items())
            )
    base = statistics.median(speeds["charlm sample"])
    print(f"median over {args.repeats} rounds of {args.chars:,} greedy characters:")
    for name, values in speeds.items():
        print(
            f"  {name:24s} {statistics.median(values):8,.0f} chars/s  ({statistics.median(values) / base:.2f}x charlm sample)"
        )


if __name__ == "__main__":
    main()
