"""`v4code doctor`: the effective configuration and where each value came from, which providers
are usable and why not, and the accelerators torch sees. Never prints a key unmasked."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agent import __version__
from agent.commands.common import (
    BaseUrlOpt,
    ModelOpt,
    ModelPathOpt,
    OutputFormat,
    OutputFormatOpt,
    ProviderOpt,
    RepoOpt,
    VerboseOpt,
    resolve_repo,
    run_cli,
)
from agent.config import Settings, describe_sources, how_to_configure, load_settings
from agent.output import print_json


def accelerators() -> dict[str, Any]:
    """What torch can run on. Imports torch lazily; the base install has none."""
    if importlib.util.find_spec("torch") is None:
        return {
            "torch": None,
            "devices": [],
            "note": 'torch is not installed (pip install -e ".[local]")',
        }
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a finding, not a crash
        return {
            "torch": None,
            "devices": [],
            "note": f"torch failed to import: {type(exc).__name__}: {exc}",
        }
    info: dict[str, Any] = {"torch": torch.__version__, "devices": []}
    devices: list[dict[str, Any]] = info["devices"]
    try:
        if torch.cuda.is_available():
            backend = "rocm" if getattr(torch.version, "hip", None) else "cuda"
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append(
                    {
                        "type": backend,
                        "index": i,
                        "name": props.name,
                        "memory_gib": round(props.total_memory / 2**30, 1),
                    }
                )
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and xpu.is_available():
            for i in range(xpu.device_count()):
                devices.append({"type": "xpu", "index": i, "name": xpu.get_device_name(i)})
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append({"type": "mps", "index": 0, "name": "Apple GPU (MPS)"})
        if importlib.util.find_spec("torch_npu") is not None:
            import torch_npu  # noqa: F401 - registers torch.npu

            npu = getattr(torch, "npu", None)
            if npu is not None and npu.is_available():
                for i in range(npu.device_count()):
                    devices.append({"type": "npu", "index": i, "name": npu.get_device_name(i)})
    except Exception as exc:  # noqa: BLE001
        info["note"] = f"probing devices failed: {type(exc).__name__}: {exc}"
    devices.append(
        {
            "type": "cpu",
            "index": 0,
            "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    )
    return info


def ping(settings: Settings) -> dict[str, Any]:
    """GET {base_url}/models with the configured key: does the server answer and accept the key?"""
    import httpx

    from agent.providers.openai_compat import scrub_key

    if settings.provider not in ("deepseek", "openai") or not settings.base_url:
        return {"ok": False, "detail": "nothing to ping (no API provider selected)"}
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.reveal()}"
    url = f"{settings.base_url}/models"
    try:
        resp = httpx.get(
            url, headers=headers, timeout=settings.connect_timeout, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        detail = scrub_key(f"{type(exc).__name__}: {exc}", settings.api_key)
        return {"ok": False, "url": url, "detail": detail}
    detail = f"HTTP {resp.status_code}"
    if resp.status_code == 200:
        try:
            ids = [m.get("id") for m in resp.json().get("data", [])]
            detail += f"; models: {', '.join(map(str, ids[:8]))}" + (" ..." if len(ids) > 8 else "")
        except (ValueError, AttributeError):
            pass
    elif resp.status_code in (401, 403):
        detail += f"; the key was rejected: set {settings.api_key_env}"
    return {
        "ok": resp.status_code == 200,
        "url": url,
        "detail": scrub_key(detail, settings.api_key),
    }


def diagnose(
    repo: Path, *, with_accelerators: bool = True, with_ping: bool = False, **flags: Any
) -> dict[str, Any]:
    """The doctor report as a JSON-safe dict (the library behind the command)."""
    settings = load_settings(repo, **flags)
    typed = settings.to_dict()
    report: dict[str, Any] = {
        "command": "doctor",
        "status": "ok",
        "version": __version__,
        "python": sys.version.split()[0],
        "repo": str(repo),
        "provider": settings.provider,
        "provider_source": settings.sources.get("provider"),
        "model": settings.model,
        "config_files": settings.config_files,
        "settings": {
            name: {"value": typed[name], "shown": shown, "source": source}
            for name, shown, source in describe_sources(settings)
        },
        "providers": {name: st.to_dict() for name, st in settings.providers.items()},
        "notes": list(settings.notes),
        "how_to_configure": None if settings.provider else how_to_configure(),
        "accelerators": accelerators() if with_accelerators else None,
        "ping": ping(settings) if with_ping else None,
    }
    return report


def render_text(report: dict[str, Any]) -> str:
    lines = [f"v4code {report['version']} (Python {report['python']})", ""]
    lines.append("Configuration files")
    for kind, info in report["config_files"].items():
        lines.append(f"  {kind:8} {info['path']}" + ("" if info["exists"] else "  (not present)"))
    lines.append("")
    if report["provider"]:
        lines.append(f"Provider: {report['provider']}  [{report['provider_source']}]")
    else:
        lines.append("Provider: none configured")
    lines.append("")
    lines.append("Effective settings (value  <- source)")
    width = max(len(name) for name in report["settings"])
    for name, s in report["settings"].items():
        lines.append(f"  {name:<{width}}  {s['shown']}  <- {s['source']}")
    lines.append("")
    lines.append("Providers")
    for name, st in report["providers"].items():
        mark = "usable    " if st["usable"] else "not usable"
        lines.append(f"  {name:9} {mark}  {st['reason']}")
    if report["notes"]:
        lines.append("")
        lines.append("Notes")
        lines.extend(f"  - {n}" for n in report["notes"])
    acc = report.get("accelerators")
    if acc is not None:
        lines.append("")
        if acc.get("torch"):
            lines.append(f"Accelerators (torch {acc['torch']})")
            for d in acc["devices"]:
                extra = f", {d['memory_gib']} GiB" if "memory_gib" in d else ""
                extra += f", {d['threads']} threads" if "threads" in d else ""
                lines.append(f"  {d['type']}:{d['index']}  {d['name']}{extra}")
        else:
            lines.append("Accelerators: none probed")
        if acc.get("note"):
            lines.append(f"  ({acc['note']})")
    if report.get("ping") is not None:
        p = report["ping"]
        lines.append("")
        lines.append(f"Ping: {'ok' if p['ok'] else 'FAILED'}  {p.get('url', '')}  {p['detail']}")
    if report["how_to_configure"]:
        lines.append("")
        lines.append("Nothing is configured yet. " + report["how_to_configure"])
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    @run_cli("doctor")
    def doctor(
        repo: RepoOpt = Path("."),
        provider: ProviderOpt = None,
        model: ModelOpt = None,
        base_url: BaseUrlOpt = None,
        model_path: ModelPathOpt = None,
        output_format: OutputFormatOpt = OutputFormat.text,
        ping_server: Annotated[
            bool,
            typer.Option(
                "--ping", help="Also ask the selected server for its models (one GET request)."
            ),
        ] = False,
        no_accelerators: Annotated[
            bool, typer.Option("--no-accelerators", help="Do not import torch to list devices.")
        ] = False,
        verbose: VerboseOpt = False,
    ) -> None:
        """Show the configuration, which providers are usable, and the accelerators torch sees."""
        root = resolve_repo(repo)
        report = diagnose(
            root,
            with_accelerators=not no_accelerators,
            with_ping=ping_server,
            provider=provider,
            model=model,
            base_url=base_url,
            model_path=model_path,
        )
        if output_format == OutputFormat.text:
            typer.echo(render_text(report))
        else:
            print_json(report)
