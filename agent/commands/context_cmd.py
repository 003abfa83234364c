"""`v4code context`: pack the repository the way ask/fix will, and report it. Needs no model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.commands.common import (
    BudgetOpt,
    ModelOpt,
    OutputFormat,
    OutputFormatOpt,
    RepoOpt,
    VerboseOpt,
    resolve_repo,
    run_cli,
)


class PackFormat(StrEnum):
    xml = "xml"
    markdown = "markdown"


FormatOpt = Annotated[
    PackFormat, typer.Option("--format", help="Delimiters of the packed text: xml or markdown.")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the packed text to FILE ('-' for stdout).", show_default=False
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Gitignore-style glob that overrides the engine's exclusions (secrets, lock, generated, "
        "vendored, size). Repeatable.",
        show_default=False,
    ),
]
MaxFileOpt = Annotated[
    int,
    typer.Option("--max-file-bytes", min=1, help="Leave out files larger than this many bytes."),
]


def register(app: typer.Typer) -> None:
    app.command(
        "context",
        help="Pack the repository into one prompt and report tokens, modes, exclusions and cost.",
    )(context)


@run_cli("context")
def context(
    repo: RepoOpt = Path("."),
    budget: BudgetOpt = None,
    format: FormatOpt = PackFormat.xml,
    output: OutputOpt = None,
    output_format: OutputFormatOpt = OutputFormat.text,
    include: IncludeOpt = None,
    model: ModelOpt = None,
    max_file_bytes: MaxFileOpt = 1_048_576,
    verbose: VerboseOpt = False,
) -> None:
    from agent.config import load_settings
    from agent.context import pack_repository
    from agent.errors import UsageError
    from agent.output import err_console, print_json

    root = resolve_repo(repo)
    flags: dict[str, Any] = {"model": model} if model else {}
    settings = load_settings(root, **flags)
    if output is not None and str(output) != "-":
        _check_writable(output)
    console = err_console() if output_format is OutputFormat.text else None
    pack = pack_repository(
        root,
        budget=budget,
        fmt=format.value,
        settings=settings,
        console=console,
        include=include or (),
        max_file_bytes=max_file_bytes,
        skip=[output] if output is not None and str(output) != "-" else (),
    )
    if output is not None:
        if str(output) == "-":
            typer.echo(pack.text, nl=False)
        else:
            from agent.fileio import atomic_write

            try:
                atomic_write(output, pack.text.encode("utf-8"))
            except OSError as exc:
                raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    if output_format is OutputFormat.text:
        _summary(pack, err_console(), verbose=verbose, output=output)
    else:
        manifest = pack.manifest()
        manifest.setdefault("command", "context")
        manifest.setdefault("status", "ok")
        if output is not None and str(output) != "-":
            manifest["output"] = str(output)
        print_json(manifest)


def _check_writable(output: Path) -> None:
    from agent.errors import UsageError

    if output.is_dir():
        raise UsageError(f"--output is a directory: {output}")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--output directory does not exist: {parent}")


def _summary(pack: Any, console: Any, *, verbose: bool, output: Path | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from agent.context.render import display_path  # a newline in a name must not break rows

    share = pack.total_tokens / pack.budget * 100 if pack.budget else 0.0
    console.print(
        f"[bold]{pack.name}[/]: {len(pack.files):,} files, [bold]{pack.total_tokens:,}[/] tokens "
        f"of a {pack.budget:,} budget ({share:.1f}%), tokenizer {pack.tokenizer}, {pack.elapsed_s:.2f} s"
    )
    model = f" ({pack.model})" if pack.model else ""
    console.print(
        f"cost to send{model}: ${pack.cost_cold:.4f} cold, ${pack.cost_cached:.4f} fully cached"
    )
    counts = pack.counts()
    table = Table(title="files by tier and mode", title_justify="left", show_edge=False)
    for col in ("tier", "full", "skeleton", "listed", "tokens"):
        table.add_column(col, justify="left" if col == "tier" else "right")
    tokens_by_tier: dict[str, int] = {}
    for f in pack.files:
        tokens_by_tier[f.tier] = tokens_by_tier.get(f.tier, 0) + f.tokens
    for tier in ("source", "tests", "config", "docs", "data"):
        if tier in counts:
            c = counts[tier]
            table.add_row(
                tier,
                str(c["full"]),
                str(c["skeleton"]),
                str(c["listed"]),
                f"{tokens_by_tier[tier]:,}",
            )
    console.print(table)
    top = sorted(pack.files, key=lambda f: (-f.tokens, f.path))[: 20 if verbose else 10]
    if top:
        largest = Table(title="largest files", title_justify="left", show_edge=False)
        largest.add_column("tokens", justify="right")
        largest.add_column("mode")
        largest.add_column("path")
        for f in top:
            largest.add_row(f"{f.tokens:,}", f.mode, Text(display_path(f.path)))
        console.print(largest)
    if pack.excluded:
        by_reason: dict[str, int] = {}
        for e in pack.excluded:
            by_reason[_reason_group(e.reason)] = by_reason.get(_reason_group(e.reason), 0) + 1
        console.print(f"excluded: {len(pack.excluded):,} paths")
        for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            console.print(f"  {n:>6,}  {reason}")
        shown = pack.excluded if verbose else pack.excluded[:10]
        for e in shown:
            console.print(f"  - {display_path(e.path)}: {e.reason}", markup=False, highlight=False)
        if len(shown) < len(pack.excluded):
            console.print(f"  ... {len(pack.excluded) - len(shown):,} more (--verbose lists all)")
    if output is not None and str(output) != "-":
        console.print(f"wrote {output}")


def _reason_group(reason: str) -> str:
    """'too large (2,000,000 bytes > 1,048,576)' -> 'too large'."""
    return reason.split(" (", 1)[0]
