"""Battles: prepare them in a batch (images made before any rater waits) and pick the next one.

A battle is one prompt and seed rendered by two model settings, `a` and `b`, with the side shown on
the left drawn at random once per battle. Pairing prefers the comparisons (pairs of settings) with
the fewest votes, then the battles with the fewest votes, so votes spread evenly.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from itertools import combinations
from pathlib import Path

from PIL import Image

from .. import registry
from ..errors import UsageError
from ..evaluate import golden
from ..generate import run
from ..prompts import Prompt
from ..request import Request
from ..sampling import sample
from ..store import Store
from . import settings as S
from .settings import PrepareConfig

_random = secrets.SystemRandom()  # battle seeds and sides: from the OS's cryptographic source


# -- prompts ------------------------------------------------------------------------------------
def golden_prompts(path: str | Path) -> tuple[list[Prompt], str]:
    """A golden set (the Evaluate tab's format: JSONL objects, or one prompt a line with seeds 0, 1,
    2, ...) as battle prompts, and the set's name; a prompt the file gives no category has none here."""
    gs = golden.load(path)
    return [Prompt(p.text, p.seed, None if p.category == golden.DEFAULT_CATEGORY else p.category)
            for p in gs.prompts], gs.name


def world_prompts(n: int, seed: int = 0, category: str | None = None) -> list[Prompt]:
    """Fresh prompts of the embedded shapes world, spread over its categories (or from one)."""
    from ..world import CATEGORIES, sample_prompts

    if category is not None and category not in CATEGORIES:
        raise UsageError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    return sample_prompts(n, seed, category)


def typed_prompts(texts: list[str], seed: int = 0) -> list[Prompt]:
    """Prompts an admin typed: one a line, seeds seed, seed + 1, ..."""
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise UsageError("prompts: type at least one prompt (one a line)")
    return [Prompt(t, seed + i, "typed") for i, t in enumerate(texts)]


SOURCES = ("world", "typed", "golden")


def prompt_source(source: str, *, n: int = 100, seed: int = 0, category: str | None = None,
                  typed: list[str] | None = None, golden_file: str | Path | None = None) -> tuple[list[Prompt], str]:
    """The prompts battles are drawn from, and the name the battles record for where they came from:
    fresh prompts of the embedded world ("world"), prompts an admin typed ("admin"), or a golden-set
    file (the set's name)."""
    if source == "typed":
        return typed_prompts(typed or [], seed), "admin"
    if source == "golden":
        if not golden_file:
            raise UsageError("golden set: give a JSONL file (prompt, seed, category) or one prompt a line")
        return golden_prompts(golden_file)
    if source == "world":
        return world_prompts(n, seed, category), "world"
    raise UsageError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")


# -- preparing ------------------------------------------------------------------------------------
def plan(setting_keys: list[str], prompts: list[Prompt], cfg: PrepareConfig, counts: dict[tuple[str, str], int],
         category_counts: dict[tuple[str, str, str | None], int] | None = None) -> list[tuple[str, str, Prompt]]:
    """Which comparison each new battle goes to, prompts taken in order and reused when they run
    out: within the prompt's category, the comparisons take turns (so that each gets every category
    and a category names no opponent); among those even there, the one with the fewest battles and
    votes so far (`counts` per ordered pair, `category_counts` per ordered pair and category)."""
    if cfg.pairs == "first":
        pairs = [(setting_keys[0], k) for k in setting_keys[1:]]
    else:
        pairs = list(combinations(setting_keys, 2))
    load = {p: counts.get(p, 0) + counts.get(p[::-1], 0) for p in pairs}
    category_counts = category_counts or {}
    by_category = Counter()
    for (a, b, c), k in category_counts.items():
        for p in ((a, b), (b, a)):
            if p in load:
                by_category[p, c] += k
    out = []
    for i in range(cfg.n):
        prompt = prompts[i % len(prompts)]
        pair = min(pairs, key=lambda p: (by_category[p, prompt.category], load[p]))  # first of the equals, in order
        by_category[pair, prompt.category] += 1
        load[pair] += 1
        out.append((*pair, prompt))
    return out


def _extra_keys(setting: dict) -> dict:
    return {k: v for k, v in setting.items() if k not in ("model", "steps", "guidance")}


def request(setting: dict, prompt: Prompt) -> Request:
    """The generation request of one side of a battle: every key beyond model, steps and guidance
    must be a field of `generate.Request` (caching, FP8, size, ...); checked before anything runs."""
    extra = _extra_keys(setting)
    fields = {f.name for f in dataclasses.fields(Request)} - {"prompt", "seed", "steps", "guidance"}
    unknown = sorted(set(extra) - fields)
    if unknown:
        allowed = ", ".join(["model", "steps", "guidance", *sorted(fields)])
        raise UsageError(f"setting: {', '.join(unknown)} is not a generation option here; allowed: {allowed}")
    req = Request(prompt.text, setting["steps"], setting["guidance"], prompt.seed, **extra)
    req.check()
    return req


def render(family, setting: dict, prompts: list[Prompt], batch_size: int) -> list[Image.Image]:
    """The images of one setting, through the sampler the Compare tab uses.

    Settings of model, steps and guidance alone are sampled in batches; a setting with other keys
    (caching, FP8, ...) goes image by image through `generate.run`, as the Compare tab does."""
    reqs = [request(setting, p) for p in prompts]
    if _extra_keys(setting):
        return [run(family, req, model_name=setting["model"])[0] for req in reqs]
    size = family.default_size
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        images, _ = sample(family, [p.text for p in chunk], steps=setting["steps"], guidance=setting["guidance"],
                           seeds=[p.seed for p in chunk], height=size, width=size)
        out += [Image.fromarray(im.numpy()) for im in images]
    return out


def check(store: Store, settings: list[dict], prompts: list[Prompt], cfg: PrepareConfig) -> list[dict]:
    """Refuse what `prepare` could not do, before any model runs (or a job is queued); returns the
    settings normalised."""
    cfg.check(len(settings))
    if not prompts:
        raise UsageError("prompts: no prompts to draw battles from")
    names = registry.names(store)
    settings = [S.normalize(s, names) for s in settings]
    keys = [S.key(s) for s in settings]
    for s in settings:
        request(s, prompts[0])  # a bad option is refused before any model runs
    if len(set(keys)) != len(keys):
        raise UsageError("settings: two settings are identical; a battle needs two different settings")
    if store.root is None:
        raise UsageError("prepare needs a data directory to keep the battle images")
    return settings


def prepare(store: Store, settings: list[dict], prompts: list[Prompt], cfg: PrepareConfig | None = None,
            *, load: Callable[[str], object] | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Pre-generate `cfg.n` battles between the settings on the prompts; returns the battle rows.

    Every image is made before the first battle row is written, so raters never see half a battle.
    Nothing a rater could recompute tells the sides apart: each battle's noise seed (its two sides
    share it, so only the settings differ) and which side is on the left come from the system's
    cryptographic random source, never from public inputs, and every battle has image files of its
    own, so one battle's reveal says nothing of another's."""
    cfg = cfg or PrepareConfig()
    settings = check(store, settings, prompts, cfg)
    keys = [S.key(s) for s in settings]
    load = load or (lambda name: registry.load(name, store=store, device=cfg.device))
    counts = {(r["a_setting"], r["b_setting"]): r["n_battles"] + r["n_votes"] for r in store.comparison_counts()}
    per_category = Counter((b["a_setting"], b["b_setting"], b["category"]) for b in store.battles())
    planned = [(a, b, replace(p, seed=_random.randrange(2**31)))
               for a, b, p in plan(keys, prompts, cfg, counts, per_category)]

    # 1. Each setting draws its side of every battle it is in, one loaded model at a time. Stopped
    # half way (a canceled job), it leaves no image behind.
    files: dict[tuple[int, str], str] = {}
    total, done = 2 * len(planned), 0
    try:
        for k, setting in zip(keys, settings):
            mine = [(i, p) for i, (a, b, p) in enumerate(planned) if k in (a, b)]
            for j in range(0, len(mine), cfg.batch_size):
                chunk = mine[j : j + cfg.batch_size]
                for (i, _), image in zip(chunk, render(load(setting["model"]), setting, [p for _, p in chunk],
                                                       cfg.batch_size)):
                    path = store.new_file(".png", folder="arena")
                    image.save(path)
                    files[(i, k)] = path.name
                done += len(chunk)
                if progress:
                    progress(done, total)
    except BaseException:
        for name in files.values():
            (store.root / "arena" / name).unlink(missing_ok=True)
        raise

    # 2. Write the battles, each with its left side drawn at random.
    return [store.add_battle(prompt=p.text, seed=p.seed, category=p.category, source=cfg.source, a_setting=a,
                             b_setting=b, a_image=files[(i, a)], b_image=files[(i, b)],
                             left_side=_random.choice("ab"))
            for i, (a, b, p) in enumerate(planned)]


# -- pairing and showing ----------------------------------------------------------------------------
def pair_of(a_setting: str, b_setting: str) -> tuple[str, str]:
    """A comparison regardless of which setting was drawn as `a`."""
    return tuple(sorted((a_setting, b_setting)))


def next_battle(store: Store, rater: str) -> dict | None:
    """The battle this rater should see next (recorded as served to them), or None when they have
    voted on all of them: from the comparison with the fewest votes, the battle with the fewest
    votes, ties at random (`Store.next_unvoted`, in work bounded whatever the database's size)."""
    battle = store.next_unvoted(rater)
    if battle is not None:
        store.serve(battle["id"], rater)
    return battle


def sides(battle: dict) -> tuple[str, str]:
    """(left setting, right setting) of a battle, as canonical JSON."""
    if battle["left_side"] == "a":
        return battle["a_setting"], battle["b_setting"]
    return battle["b_setting"], battle["a_setting"]


def files(battle: dict) -> tuple[str, str]:
    """(left image file, right image file) of a battle, under the data directory's arena/."""
    return (battle["a_image"], battle["b_image"]) if battle["left_side"] == "a" else \
        (battle["b_image"], battle["a_image"])


def image(store: Store, name: str) -> Image.Image:
    """One battle image (a name from `files`), read from the data directory."""
    return Image.open(store.root / "arena" / name).convert("RGB")
