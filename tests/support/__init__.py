"""Test helpers shared by several test packages (the scripted OpenAI-compatible server)."""
