"""The command line, one module per concept: each command is a function that carries its own flags
(`@command(name, help, arg(...), ...)`) and adapts them to engine calls. Nothing heavy is imported
until a command's flags are checked, so a bad flag is refused at once.

models.py    generate, parity, register, random-model
export.py    models, export
distill.py   distill, jobs, resume, cancel, job-run
evaluate.py  eval, lineage, adherence, adherence-table
decide.py    bench, sweep, calibrate
arena.py     arena prepare | export | leaderboard
world.py     train-teacher, train-judge
"""
