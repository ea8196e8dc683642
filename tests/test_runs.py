import csv
import io
import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from charlm.cli import app
from tests.conftest import tiny_text_config, write_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs_dir(tmp_path, tiny_run):
    """finished, running, crashed, failed, half-written, damaged and foreign directories (copies of
    the session's tiny run: a finished 1 x 16 LSTM of 20 steps, test scored)."""
    base = tmp_path / "runs"
    shutil.copytree(tiny_run, base / "a-finished")
    summary = json.loads((tiny_run / "summary.json").read_text())
    for name, status, pid in (
        ("b-running", "running", os.getpid()),
        ("c-crashed", "running", 2**22 + 12345),
        ("d-failed", "failed", os.getpid()),
    ):
        shutil.copytree(tiny_run, base / name)
        (base / name / "summary.json").write_text(json.dumps({**summary, "status": status, "pid": pid}))
    (base / "e-half").mkdir()
    shutil.copy(tiny_run / "config.yaml", base / "e-half" / "config.yaml")
    (base / "f-damaged").mkdir()
    (base / "f-damaged" / "summary.json").write_text("{not json")
    (base / "notes").mkdir()
    (base / "notes" / "readme.txt").write_text("not a run")
    return base


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_runs_lists_every_kind_of_directory(runs_dir, tiny_run):
    result = invoke("runs", runs_dir, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "a-finished": "finished",
        "b-running": "running",
        "c-crashed": "crashed",
        "d-failed": "failed",
        "e-half": "incomplete",
        "f-damaged": "unreadable (summary.json)",
    }
    done = rows["a-finished"]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert (done["cell"], done["size"], done["steps"]) == ("lstm", "1x16", 20)
    assert done["best_valid_bpc"] == pytest.approx(summary["best_valid_bpc"])
    assert done["test_bpc"] == pytest.approx(summary["test"]["bpc"])
    assert done["parameters"] == summary["parameters"]
    # Two times, named for what they are: optimizer steps, and the process's whole wall time.
    assert done["train_s"] == summary["train_seconds"] and done["wall_s"] == summary["wall_seconds"]
    assert done["wall_s"] > done["train_s"] > 0


def test_a_run_from_before_wall_time_lists_its_training_time(tmp_path, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "old")
    summary = json.loads((tiny_run / "summary.json").read_text())
    del summary["wall_seconds"]
    (tmp_path / "old" / "summary.json").write_text(json.dumps(summary))
    [row] = json.loads(invoke("runs", tmp_path / "old", "--json").stdout)
    assert row["train_s"] == summary["train_seconds"] and row["wall_s"] is None and row["status"] == "finished"
    rows = list(csv.DictReader(io.StringIO(invoke("runs", tmp_path / "old", "--csv", "--sort", "wall_s").stdout)))
    assert rows[0]["wall_s"] == "" and float(rows[0]["train_s"]) == summary["train_seconds"]


def test_runs_sorts_and_writes_csv_and_a_table(runs_dir):
    rows = list(csv.DictReader(io.StringIO(invoke("runs", runs_dir, "--csv", "--sort", "status").stdout)))
    assert [r["status"] for r in rows][:2] == ["crashed", "failed"]
    table = invoke("runs", runs_dir)
    assert table.exit_code == 0 and "a-finished" in table.stdout and "best valid bpc" in table.stdout
    wrong = invoke("runs", runs_dir, "--sort", "colour")  # a Typer choice: a usage error, exit 2
    assert wrong.exit_code == 2 and "Invalid value for '--sort'" in wrong.stderr
    from charlm.errors import CharlmError
    from charlm.runs.listing import sort_rows

    with pytest.raises(CharlmError, match="cannot sort by 'colour'"):  # the library refuses it too
        sort_rows([], "colour")


def test_a_foreign_directory_is_listed_not_fatal(tmp_path):
    (tmp_path / "stuff").mkdir()
    rows = json.loads(invoke("runs", tmp_path / "stuff", tmp_path / "missing", "--json").stdout)
    assert [r["status"] for r in rows] == ["not a run", "not a run"]


def test_plot_writes_png_and_svg(tmp_path, runs_dir):
    one = invoke("plot", runs_dir / "a-finished", "-o", tmp_path / "one.png")
    assert one.exit_code == 0, one.output
    two = invoke("plot", runs_dir / "a-finished", runs_dir / "b-running", "-o", tmp_path / "two.png", "--x", "chars")
    assert two.exit_code == 0, two.output
    data_one, data_two = (tmp_path / "one.png").read_bytes(), (tmp_path / "two.png").read_bytes()
    assert data_one.startswith(PNG_SIGNATURE) and data_two.startswith(PNG_SIGNATURE)
    assert len(data_two) > len(data_one)
    svg = invoke("plot", runs_dir / "a-finished", "-o", tmp_path / "c.svg", "--x", "time", "--metric", "loss")
    assert svg.exit_code == 0 and (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


def test_plot_refuses_what_it_cannot_draw(tmp_path, runs_dir):
    assert "must end in .png or .svg" in invoke("plot", runs_dir / "a-finished", "-o", tmp_path / "x.jpg").stderr
    assert "no metrics.jsonl" in invoke("plot", runs_dir / "notes", "-o", tmp_path / "x.png").stderr
    wrong = invoke("plot", runs_dir / "a-finished", "--x", "epoch", "-o", tmp_path / "x.png")  # a Typer choice: exit 2
    assert wrong.exit_code == 2 and "Invalid value for '--x'" in wrong.stderr


def run_script(name: str, steps: int, out, text_files, tmp_path):
    """scripts/NAME STEPS OUT on the tiny text corpus, through `python -m charlm`."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    config = write_config(
        tmp_path / "c.yaml", tiny_text_config(text_files, threads=1, eval_batch_size=2, test_batch_size=2)
    )
    env = {**os.environ, "CONFIG": str(config), "CHARLM": f"{sys.executable} -m charlm", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / name), str(steps), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.e2e
def test_compare_cells_script_makes_a_table_and_a_plot(tmp_path, text_files):
    run_script("compare_cells.sh", 4, tmp_path / "cells", text_files, tmp_path)
    assert (tmp_path / "cells" / "cells.png").read_bytes().startswith(PNG_SIGNATURE)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cells" / "cells.csv").read_text())))
    assert sorted(r["cell"] for r in rows) == ["gru", "lstm", "mingru", "minlstm", "rnn_tanh"]
    assert {r["status"] for r in rows} == {"finished"}
    params = [int(r["parameters"]) for r in rows]
    assert max(params) / min(params) < 1.03  # matched budgets (decoders differ by hidden x vocab)
    again = run_script("compare_cells.sh", 4, tmp_path / "cells", text_files, tmp_path)
    assert again.stdout.count("skipped") == 5


@pytest.mark.e2e
def test_compare_impls_script_runs_all_five(tmp_path, text_files):
    run_script("compare_impls.sh", 3, tmp_path / "impls", text_files, tmp_path)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "impls" / "impls.csv").read_text())))
    assert sorted(r["name"] for r in rows) == [
        "gru-fused",
        "gru-reference",
        "lstm-fused",
        "lstm-reference",
        "mogrifier_lstm-reference",
    ]
    assert {r["status"] for r in rows} == {"finished"}
