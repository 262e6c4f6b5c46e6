"""Write the embedded domain's default golden set from the shapes world's evaluation prompts.

    python scripts/make_golden.py            # assets/golden/embedded.jsonl: 360 prompts, 60 per category

Each line carries the prompt, its category, the seed it is rendered with and the attributes it
states (what the judge checks). The categories are interleaved, so `eval --limit N` keeps them all.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.evaluate import golden


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=360, help="prompts (spread evenly over the six categories)")
    p.add_argument("--seed", type=int, default=1, help="draws the prompts and their seeds")
    p.add_argument("--out", default=str(golden.DEFAULT_EMBEDDED))
    args = p.parse_args()
    prompts = golden.from_world(args.n, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    golden.write(args.out, prompts)
    print(f"{args.out}: {len(prompts)} prompts, " +
          ", ".join(f"{c} {k}" for c, k in sorted(Counter(p.category for p in prompts).items())))


if __name__ == "__main__":
    main()
