"""Guidance and step distillation (DESIGN §4-5): recipes, the rounds' targets, walkers, the trainer, LoRA."""
