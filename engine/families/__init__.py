"""Model families: each adapts one kind of denoiser to the lab's one contract (base.py)."""
