"""The decision table, measured on the user's own model and machine: which technique buys how much
speed for how much quality.

bench.py   `python -m engine bench`: the teacher, its students, caches and FP8, each row timed and scored
sweep.py   one prompt over a grid of steps x guidance (or cache thresholds): cost against quality
guide.py   the decision guide's questions, answered from a model's own bench rows
config.py  what a bench run and a sweep measure, checked without importing torch
"""
