"""Typer command modules. Each module exposes `register(app)`; commands stay thin."""
