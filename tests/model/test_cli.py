"""`v4code model info | init | bench` through the real CLI entry point (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the CLI with torch made unimportable, as on the base install (pip install -e .).
NO_TORCH = "import sys; sys.modules['torch'] = None; from agent.cli import main; sys.argv[0] = 'v4code'; main()"
CLI = "from agent.cli import main; import sys; sys.argv[0] = 'v4code'; main()"


def v4code(*args: str, torch: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI if torch else NO_TORCH, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_and_info_work_without_torch():
    r = v4code("--help", torch=False)
    assert r.returncode == 0 and "model" in r.stdout
    r = v4code("model", "info", "v4-flash", "--output-format", "json", torch=False)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    kv = info["kv_cache"]
    assert info["params"]["total"] == 284_332_240_471  # 284B as released (MTP block excluded)
    assert kv["context"] == 1_048_576
    assert kv["engine"]["bytes_per_token"] == 6880.0
    assert 6.7 < kv["engine"]["gib"] < 6.8
    assert kv["dense_mqa_baseline"]["gib"] == 43.0
    assert kv["deepseek_v3_2"]["fp8_bytes_per_token"] == 48_068
    assert kv["v4_serving_fp8_fp4"]["bytes_per_token"] == pytest.approx(3514.2, abs=0.1)
    assert info["architecture"]["layer_types"] == {"swa": 2, "csa": 21, "hca": 20}


def test_info_text_for_pro_and_context():
    r = v4code("model", "info", "v4-pro", "--context", "131072", torch=False)
    assert r.returncode == 0, r.stderr
    assert "CSA 30, HCA 31" in r.stdout and "131,072 tokens" in r.stdout
    assert "dense MQA baseline" in r.stdout and "DeepSeek-V3.2" in r.stdout


def test_commands_needing_torch_say_how_to_install_it(tmp_path):
    for args in (["model", "init", str(tmp_path / "x")], ["model", "bench"]):
        r = v4code(*args, torch=False)
        assert r.returncode == 2
        assert 'pip install -e ".[local]"' in r.stderr
    assert not (tmp_path / "x").exists()


def test_usage_errors_exit_2(tmp_path):
    r = v4code("model", "info", str(tmp_path / "missing"), torch=False)
    assert r.returncode == 2 and "neither a checkpoint directory nor a preset" in r.stderr
    (tmp_path / "empty").mkdir()
    r = v4code("model", "info", str(tmp_path / "empty"), "--output-format", "json", torch=False)
    assert r.returncode == 2 and json.loads(r.stdout)["status"] == "usage_error"
    r = v4code("model", "init", str(tmp_path / "y"), "--preset", "v4-flash")
    assert r.returncode == 2
    r = v4code("model", "bench", "--context", "abc")
    assert r.returncode == 2 and "--context" in r.stderr


def test_init_then_info_and_bench(tmp_path):
    pytest.importorskip("torch")
    target = tmp_path / "tiny"
    r = v4code("model", "init", str(target), "--preset", "tiny", "--output-format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (
        out["untrained"]
        and "tokenizer.json" in out["files"]
        and "model.safetensors" in out["files"]
    )
    r = v4code("model", "init", str(target))  # refuses to overwrite
    assert r.returncode == 2 and "not empty" in r.stderr
    r = v4code(
        "model", "info", str(target), "--context", "65536", "--output-format", "json", torch=False
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["untrained"] is True and info["checkpoint"]["tensors"] > 50
    r = v4code(
        "model", "bench", "--model-path", str(target), "--context", "128,256", "--decode-tokens", "2",
        "--device", "cpu", "--threads", "1", "--output-format", "json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    bench = json.loads(r.stdout)
    assert [row["context"] for row in bench["results"]] == [128, 256]
    assert all(row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0 for row in bench["results"])
    assert bench["device"] == "cpu" and bench["dtype"] == "float32"


def test_importing_the_package_and_cli_does_not_import_torch():
    code = (
        "import sys, model, model.cli, model.info, model.presets, model.config; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('clean')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr


def test_broken_checkpoints_and_targets_are_usage_errors(tmp_path):
    """Exit 2 with the problem named - never an internal error (exit 1)."""
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"model_type": "deepseek_v4", "vocab_size": 512}))
    cases = [
        ("model.safetensors.index.json", b"{not json", "not a valid safetensors index"),
        ("model.safetensors", b"abc", "too short"),
        ("model.safetensors", b"\xff" * 7 + b"\x7f" + b"xx", "impossible header length"),
        ("model.safetensors", b"\x04" + b"\x00" * 7 + b"[1]x", "safetensors JSON header"),
    ]
    for name, content, message in cases:
        for f in ck.glob("model*"):
            f.unlink()
        (ck / name).write_bytes(content)
        r = v4code("model", "info", str(ck), "--output-format", "json", torch=False)
        assert r.returncode == 2, (name, r.stderr)
        assert message in json.loads(r.stdout)["error"]
    (ck / "config.json").write_text(
        json.dumps({"model_type": "deepseek_v4", "num_hidden_layers": 0})
    )
    r = v4code("model", "info", str(ck), torch=False)
    assert r.returncode == 2 and "n_layers must be positive" in r.stderr
    r = v4code("model", "info", "v4-flash", "--context", "2000000", torch=False)
    assert r.returncode == 0 and "beyond the model's 1,048,576 positions" in r.stdout


def test_init_into_an_unwritable_place_and_bench_on_a_missing_device(tmp_path):
    pytest.importorskip("torch")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = v4code("model", "init", str(blocker / "sub"), "--output-format", "json")
    assert r.returncode == 2 and "cannot write the checkpoint" in json.loads(r.stdout)["error"]
    import torch

    if not torch.cuda.is_available():
        r = v4code("model", "bench", "--device", "cuda", "--context", "16")
        assert r.returncode == 2 and "'cuda' is not available here" in r.stderr
