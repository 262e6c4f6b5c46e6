"""Golden-set validation (DESIGN §7): golden sets (golden.py), metrics (metrics.py), the VLM judge
(vlm.py), evaluation runs with cached images and background jobs (runs.py), and the Markdown
report and lineage table (report.py)."""
