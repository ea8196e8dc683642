"""Checkpoints of every format still load, and each field of a checkpoint is checked on loading.

tests/fixtures/run-0.1 is a real run directory written by charlm 0.1 (checkpoint format 1),
with what 0.1 printed for it (expected.json): today's charlm must evaluate, sample and resume
it the same way. The unit tests below write damaged payloads with torch.save and check that
loading names the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from charlm.errors import CheckpointError, ResourceError
from charlm.runs.checkpoint.contents import FORMAT_VERSION, REQUIRED_KEYS
from charlm.runs.checkpoint.storage import load_checkpoint, load_payload
from tests.conftest import cli

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    """A copy of the 0.1 run directory, as the working directory (its corpus paths are relative)."""
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    monkeypatch.chdir(tmp_path / "fixture")
    return Path("run")


# -- a run written by charlm 0.1 --------------------------------------------------------------


def test_a_run_of_charlm_0_1_evaluates_as_it_did(old_run):
    for args, expected, weights in (
        ((), EXPECTED["eval_test_averaged"], "averaged"),
        (("--weights", "trained", "--split", "valid"), EXPECTED["eval_valid_trained"], "trained"),
    ):
        scored = json.loads(cli("eval", old_run, "--json", *args, check=0).stdout)
        assert scored["tokens"] == expected["tokens"]
        assert scored["loss"] == pytest.approx(expected["loss"], abs=1e-6)
        assert scored["weights"] == weights


def test_a_run_of_charlm_0_1_samples_as_it_did(old_run):
    for weights, key in (("auto", "sample_seed3_len60"), ("trained", "sample_seed3_len60_trained")):
        proc = cli(
            "sample", old_run, "--seed", "3", "--length", "60", "--prompt", "the ", "--weights", weights, check=0
        )
        assert proc.stdout == EXPECTED[key] + "\n"


def test_a_run_of_charlm_0_1_resumes_and_writes_the_new_format(old_run):
    assert load_checkpoint(old_run / "last.pt")["format_version"] == 1
    cli(
        "train",
        "--config",
        old_run / "config.yaml",
        "--out-dir",
        old_run,
        "--resume",
        "--set",
        "train.max_steps=80",
        check=0,
    )
    records = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == list(range(5, 85, 5))  # 0.1's steps 5..60 kept, then 65..80 added
    for name in ("last.pt", "step-00000080.pt"):
        raw = load_checkpoint(old_run / name)
        assert raw["format_version"] == FORMAT_VERSION == 2
        assert raw["loop"]["step"] == 80 and raw["world_size"] == 1 and len(raw["rng_ranks"]) == 1
    assert load_payload(old_run / "step-00000060.pt").format_version == 1  # 0.1's file, kept


def test_format_1_is_upgraded_on_loading(old_run):
    payload = load_payload(old_run / "last.pt")
    raw = load_checkpoint(old_run / "last.pt")
    assert payload.format_version == 1 and payload.charlm_version == "0.1.0"
    assert payload.loop.position == raw["loop"]["position"] == 960
    for key in ("world_size", "rng_ranks", "average"):
        del raw[key]
    del raw["loop"]["position"]
    old = write_payload(old_run.parent / "oldest.pt", raw)
    upgraded = load_payload(old)
    assert upgraded.loop.position == 60 * 16  # windows done * train.seq_len, as 0.1 trained
    assert upgraded.world_size == 1 and upgraded.average is None
    assert torch.equal(upgraded.rng_ranks[0]["torch"], raw["rng"]["torch"])
    assert upgraded.to_dict()["format_version"] == FORMAT_VERSION


# -- every field checked -----------------------------------------------------------------------


def write_payload(path: Path, payload: dict) -> Path:
    """Save `payload` with plain torch.save and a matching side file, as a damaged save might."""
    torch.save(payload, path)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


@pytest.fixture(scope="module")
def good_payload() -> dict:
    """The 0.1 run's last checkpoint, loaded as format 2 writes it."""
    payload = load_payload(FIXTURE / "run" / "last.pt")
    # Relative corpus paths are only checked when the corpus is read, so any directory will do.
    return payload.to_dict()


def damaged(good: dict, change) -> dict:
    payload = {**good, "loop": dict(good["loop"]), "average": dict(good["average"])}
    change(payload)
    return payload


def test_a_good_payload_round_trips(tmp_path, good_payload):
    payload = load_payload(write_payload(tmp_path / "good.pt", good_payload))
    assert payload.format_version == FORMAT_VERSION
    assert payload.to_dict().keys() == good_payload.keys()


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_each_required_field_missing_is_named(tmp_path, good_payload, key):
    path = write_payload(tmp_path / "c.pt", damaged(good_payload, lambda p: p.pop(key)))
    with pytest.raises(CheckpointError, match=f"{path} is not a complete charlm checkpoint: it lacks {key}"):
        load_payload(path)


def _set(key, value):
    def change(payload):
        payload[key] = value

    return change


def _set_loop(key, value):
    def change(payload):
        if value is None:
            del payload["loop"][key]
        else:
            payload["loop"][key] = value

    return change


def _set_tensor(key, name, change_tensor):
    """Change one tensor of payload[key] (the model's state dict) or of the hidden list."""

    def change(payload):
        tensors = dict(payload[key]) if isinstance(payload[key], dict) else list(payload[key])
        tensors[name] = change_tensor(tensors[name].clone())
        payload[key] = tensors

    return change


def _poke(value, index=0):
    def change_tensor(tensor):
        tensor.view(-1)[index] = value
        return tensor

    return change_tensor


BAD_FIELDS = {
    "vocab not a list": (_set("vocab", "abc"), "vocab should be a list of non-empty strings"),
    "vocab of numbers": (_set("vocab", [1, 2, 3]), "vocab should be a list of non-empty strings"),
    "vocab repeated": (_set("vocab", ["a", "b", "a"]), "vocab should be a list of distinct strings"),
    "model not a state dict": (_set("model", [torch.zeros(2)]), "model should be a state dict"),
    "model of lists": (_set("model", {"embedding.weight": [1.0, 2.0]}), "model['embedding.weight'] should be a tensor"),
    "model weight nan": (
        _set_tensor("model", "rnn.weight_hh_l0", _poke(float("nan"), 7)),
        "model['rnn.weight_hh_l0'] should hold finite numbers, but 1 of its 1,024 values are NaN or infinite",
    ),
    "model bias inf": (
        _set_tensor("model", "decoder.bias", lambda t: t.fill_(float("-inf"))),
        "model['decoder.bias'] should hold finite numbers, but 32 of its 32 values are NaN or infinite",
    ),
    "model sparse": (
        _set_tensor("model", "decoder.weight", lambda t: t.to_sparse()),
        "model['decoder.weight'] should be a dense tensor",
    ),
    "hidden inf": (_set_tensor("hidden", 1, _poke(float("inf"))), "hidden[1] should hold finite numbers"),
    "optimizer not a dict": (_set("optimizer", 3), "optimizer should be an optimizer state dict"),
    "schedule keys": (_set("schedule", {"scale": 1.0}), "schedule should be a dict of scale, best_loss, bad_evals"),
    "loop not a dict": (_set("loop", [60]), "loop should be a dict of step, epoch"),
    "loop field missing": (_set_loop("position", None), "loop lacks position"),
    "loop step negative": (_set_loop("step", -1), "loop.step should be an int >= 0"),
    "loop step a string": (_set_loop("step", "60"), "loop.step should be an int >= 0"),
    "loop elapsed nan": (_set_loop("elapsed_s", float("nan")), "loop.elapsed_s should be a finite number >= 0"),
    "loop unknown field": (_set_loop("steps", 3), "loop.steps should be absent"),
    "world_size 0": (_set("world_size", 0), "world_size should be a positive int"),
    "world_size a bool": (_set("world_size", True), "world_size should be a positive int"),
    "hidden not a list": (_set("hidden", torch.zeros(1, 4, 16)), "hidden should be a list of tensors"),
    "hidden of numbers": (_set("hidden", [1.0, 2.0]), "hidden[0] should be a float tensor"),
    "hidden of another batch": (
        _set("hidden", [torch.zeros(1, 3, 16)]),
        "hidden[0] should be a float tensor (layers, 4 = train.batch_size",
    ),
    "rng without torch": (_set("rng", {"cuda": []}), "rng should be a dict with the uint8 tensor torch"),
    "rng of floats": (_set("rng", {"torch": torch.zeros(5056)}), "rng.torch should be a uint8 tensor of"),
    "rng_ranks short": (_set("rng_ranks", []), "rng_ranks should be a list of 1 rng dicts"),
    "config not a dict": (_set("config", "lstm"), "config should be a dict"),
    "config absurd": (
        _set("config", {"model": {"hidden_size": -5}}),
        "config is not a valid charlm config (model.hidden_size",
    ),
    "format unknown": (_set("format_version", 99), "has checkpoint format int 99; this charlm"),
}


@pytest.mark.parametrize("case", BAD_FIELDS)
def test_each_malformed_field_is_named(tmp_path, good_payload, case):
    change, fragment = BAD_FIELDS[case]
    path = write_payload(tmp_path / "c.pt", damaged(good_payload, change))
    with pytest.raises(CheckpointError) as info:
        load_payload(path)
    message = str(info.value)
    assert fragment in message and str(path) in message, message
    assert "\n" not in message and len(message) < 500, message
    # Through a file without a side file, as `charlm eval FILE` reads one.
    path.with_name(path.name + ".sha256").unlink()
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        load_payload(path, require_hash=False)


def test_resume_skips_a_checkpoint_with_a_malformed_field(old_run):
    # The newest checkpoint claims 0 processes: resume warns and takes the next, step 40.
    raw = load_checkpoint(old_run / "step-00000060.pt")
    write_payload(old_run / "step-00000060.pt", {**raw, "world_size": 0})
    proc = cli(
        "train",
        "--config",
        old_run / "config.yaml",
        "--out-dir",
        old_run,
        "--resume",
        "--set",
        "train.max_steps=45",
        check=0,
    )
    warnings = [line for line in proc.stderr.splitlines() if "warning: skipping" in line]
    assert (
        len(warnings) == 1 and "step-00000060.pt: the checkpoint's world_size should be a positive int" in warnings[0]
    )
    assert load_payload(old_run / "last.pt").loop.step == 45


def test_a_malformed_average_is_refused_only_where_it_is_used(tmp_path, good_payload):
    bad = damaged(good_payload, lambda p: p["average"].update(params={"decoder.bias": torch.zeros(7)}))
    payload = load_payload(write_payload(tmp_path / "c.pt", bad))
    assert payload.average is None
    assert "average.params['decoder.bias'] should be a tensor shaped like the model's" in payload.average_problem
    with pytest.raises(CheckpointError, match="its averaged weights are malformed; use --weights trained"):
        payload.build_model("auto")
    model, weights = payload.build_model("trained")
    assert weights == "trained" and torch.equal(model.decoder.bias, payload.model["decoder.bias"])


def test_non_finite_averaged_weights_are_refused_only_where_they_are_used(tmp_path, good_payload):
    def poison(payload):
        params = dict(payload["average"]["params"])
        params["decoder.weight"] = _poke(float("nan"))(params["decoder.weight"].clone())
        payload["average"]["params"] = params

    payload = load_payload(write_payload(tmp_path / "c.pt", damaged(good_payload, poison)))
    assert "average.params['decoder.weight'] should hold finite numbers" in payload.average_problem
    with pytest.raises(CheckpointError, match="its averaged weights are malformed; use --weights trained"):
        payload.build_model("averaged")
    model, _ = payload.build_model("trained")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_config_asking_for_an_absurd_model_is_refused_before_any_model_is_built(tmp_path, good_payload, monkeypatch):
    from charlm.runs.checkpoint import contents as payload_module

    def huge(payload):
        payload["config"] = {**payload["config"], "model": {**payload["config"]["model"], "hidden_size": 1_000_000}}

    path = write_payload(tmp_path / "c.pt", damaged(good_payload, huge))
    payload = load_payload(path)  # a valid config; its size is judged where a model is built
    monkeypatch.setattr(payload_module, "build_model", lambda *a: pytest.fail("a model was built"))
    with pytest.raises(ResourceError) as info:
        payload.build_model("trained")
    message = str(info.value)
    assert message.startswith(
        f"the model of {path} (1 x 1,000,000 lstm, as its config says) needs at least 14.6 TiB, but only "
    )
    assert "of memory is available on cpu; the checkpoint's config is damaged" in message and "\n" not in message
    # The CLI reads it the same way: one line, no traceback.
    proc = cli("sample", path, "--length", "5", check=1)
    assert proc.stderr.startswith("error: the model of") and "14.6 TiB" in proc.stderr


def test_weights_that_do_not_fit_the_stored_config_are_named(tmp_path, good_payload):
    def narrower(payload):  # fewer parameters than the weights hold: the shapes tell
        payload["config"] = {**payload["config"], "model": {**payload["config"]["model"], "hidden_size": 8}}

    payload = load_payload(write_payload(tmp_path / "c.pt", damaged(good_payload, narrower)))
    with pytest.raises(CheckpointError, match="weights do not fit the stored config: Error"):
        payload.build_model("trained")


def test_a_config_of_more_parameters_than_the_weights_hold_is_refused_before_building(
    tmp_path, good_payload, monkeypatch
):
    from charlm.runs.checkpoint import contents as payload_module

    def deep(payload):  # 100,000 layers of 16 units fit in memory, but the weights hold one layer
        payload["config"] = {**payload["config"], "model": {**payload["config"]["model"], "num_layers": 100_000}}

    path = write_payload(tmp_path / "c.pt", damaged(good_payload, deep))
    monkeypatch.setattr(payload_module, "build_model", lambda *a: pytest.fail("a model was built"))
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"{path}: weights do not fit the stored config: it describes a 100,000 x 16 lstm of 217,600,288 "
            "parameters, the weights hold 2,464 values -- use another checkpoint"
        ),
    ):
        load_payload(path).build_model("trained")
