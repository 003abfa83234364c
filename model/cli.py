"""`v4code model info | init | bench`. Thin: parse options, call the library, render.

No torch at import time: `v4code --help` and `v4code model info v4-flash` run on the base
install. `init` and `bench` need torch and say how to get it (exit 2) when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands.common import OutputFormat, OutputFormatOpt, VerboseOpt, run_cli
from agent.errors import UsageError
from agent.output import err_console, print_json
from model import TORCH_MISSING, torch_available

model_app = typer.Typer(
    name="model",
    help="Local engine utilities: inspect a checkpoint or preset, write a test checkpoint, benchmark.",
    no_args_is_help=True,
    add_completion=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


def _need_torch() -> None:
    if not torch_available():
        raise UsageError(TORCH_MISSING)


def _check_random_preset(preset: str, too_large: str) -> None:
    """`preset` must name a preset small enough to fill with random weights here."""
    from model.presets import PRESETS

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if preset in ("v4-flash", "v4-pro"):
        raise UsageError(f"preset {preset} {too_large}; use tiny or bench")


@model_app.command("info")
@run_cli("model info")
def info_cmd(
    target: Annotated[
        str,
        typer.Argument(help="A checkpoint directory, or a preset: v4-flash, v4-pro, tiny, bench."),
    ],
    context: Annotated[
        int, typer.Option("--context", min=0, help="Context length for the cache size.")
    ] = 1_048_576,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Cache dtype: bfloat16 or float32.")
    ] = "bfloat16",
    output_format: OutputFormatOpt = OutputFormat.text,
    verbose: VerboseOpt = False,
) -> None:
    """Architecture, parameter counts and KV-cache size at a context length (by formula)."""
    from model.config import ConfigFormatError, ModelConfig
    from model.info import checkpoint_files, dtype_bytes, find_config, safetensors_header, summary
    from model.presets import PRESETS, preset

    try:
        dtype_bytes(dtype)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    checkpoint = None
    if target in PRESETS:
        config, source = preset(target), f"preset {target}"
    else:
        path = Path(target).expanduser()
        if not path.is_dir():
            raise UsageError(
                f"{target!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})"
            )
        try:
            config = ModelConfig.from_json(find_config(path))
        except (FileNotFoundError, ConfigFormatError) as exc:
            raise UsageError(str(exc)) from None
        try:
            files = checkpoint_files(path)
            tensors = sum(
                len([k for k in safetensors_header(f) if k != "__metadata__"]) for f in files
            )
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the checkpoint in {path}: {exc}") from None
        checkpoint = {
            "files": len(files),
            "tensors": tensors,
            "bytes": sum(f.stat().st_size for f in files),
        }
        source = str(path)
    result = summary(config, context, dtype, source=source)
    if checkpoint:
        result["checkpoint"] = checkpoint
    if output_format == OutputFormat.text:
        from model.info import render_text

        typer.echo(render_text(result))
    else:
        print_json({"command": "model info", "status": "ok", **result})


@model_app.command("init")
@run_cli("model init")
def init_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    preset: Annotated[
        str, typer.Option("--preset", help="Shape: tiny (CPU tests) or bench.")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the weights.")] = 0,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Weight dtype: float32 or bfloat16.")
    ] = "float32",
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty directory.")
    ] = False,
    output_format: OutputFormatOpt = OutputFormat.text,
    verbose: VerboseOpt = False,
) -> None:
    """Write an UNTRAINED random-weight checkpoint (Hugging Face format, V4 tokenizer)."""
    _check_random_preset(preset, "has hundreds of billions of parameters")
    _need_torch()
    from model.init import InitError, init_checkpoint

    try:
        result = init_checkpoint(directory, preset, seed=seed, dtype=dtype, force=force)
    except InitError as exc:
        raise UsageError(str(exc)) from None
    if output_format == OutputFormat.text:
        typer.echo(
            f"wrote {result['path']}: preset {preset}, {result['params'] / 1e6:.1f}M parameters, "
            f"{result['bytes'] / 2**20:.1f} MiB - UNTRAINED random weights (output is noise)"
        )
    else:
        print_json({"command": "model init", "status": "ok", **result})


@model_app.command("bench")
@run_cli("model bench")
def bench_cmd(
    model_path: Annotated[
        Path | None,
        typer.Option("--model-path", help="Checkpoint directory (default: a random --preset)."),
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="Random-weight preset when no --model-path.")
    ] = "tiny",
    context: Annotated[
        str, typer.Option("--context", help="Comma-separated prefill lengths.")
    ] = "4096",
    decode_tokens: Annotated[
        int, typer.Option("--decode-tokens", min=0, help="Decode steps after each prefill.")
    ] = 16,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, xpu, mps, npu ...")
    ] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype", help="auto (bf16 on accelerators, fp32 on CPU), float32, bfloat16."
        ),
    ] = "auto",
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")
    ] = None,
    output_format: OutputFormatOpt = OutputFormat.text,
    verbose: VerboseOpt = False,
) -> None:
    """Prefill and decode speed at the given context lengths on the chosen device."""
    try:
        lengths = [int(x.replace("_", "")) for x in context.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--context must be comma-separated integers, got {context!r}") from None
    if not lengths or min(lengths) < 1:
        raise UsageError("--context needs at least one positive length")
    if model_path is None:
        _check_random_preset(preset, "is too large for a random-weight benchmark")
    _need_torch()
    import torch

    from model.bench import bench_engine
    from model.engine import build_engine, load_model
    from model.presets import preset as get_preset

    if threads:
        torch.set_num_threads(threads)
    try:  # parse_dtype reads "auto" as the device's default
        if model_path is not None:
            engine = load_model(model_path, device=device, dtype=dtype)
            source = str(model_path)
        else:
            engine = build_engine(get_preset(preset), device=device, dtype=dtype)
            source = f"preset {preset} (random weights)"
    except ValueError as exc:  # bad device/dtype/checkpoint
        raise UsageError(str(exc)) from None
    positions = engine.config.max_position_embeddings
    for n in lengths:  # all of them before any is measured
        if n + decode_tokens > positions:
            raise UsageError(f"context {n} exceeds the model's {positions} positions")
    console = err_console()
    rows = []
    for n in lengths:
        console.print(f"prefill {n:,} tokens + {decode_tokens} decode steps on {engine.device} ...")
        rows.append(bench_engine(engine, n, decode_tokens))
    result = {
        "source": source,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "results": rows,
    }
    if output_format == OutputFormat.text:
        typer.echo(
            f"{source} on {result['device']} ({result['dtype']}, {result['threads']} threads)"
        )
        typer.echo(
            f"{'context':>9} {'prefill s':>10} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak MiB':>9}"
        )
        for r in rows:
            decode = f"{r['decode_tok_s']:>13.2f}" if r["decode_tok_s"] else f"{'-':>13}"
            typer.echo(
                f"{r['context']:>9,} {r['prefill_s']:>10.3f} {r['prefill_tok_s']:>14,.1f} {decode} "
                f"{r['peak_bytes'] / 2**20:>9.0f}"
            )
    else:
        print_json({"command": "model bench", "status": "ok", **result})
