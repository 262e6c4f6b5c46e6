"""Distillation Lab web app: a Gradio Blocks app over the engine, one module per tab."""
