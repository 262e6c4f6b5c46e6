"""Distillation Lab's engine: everything the app and `python -m engine` do, importable without Gradio."""
