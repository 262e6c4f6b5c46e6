"""Golden sets: the prompts a model is validated on, each with a category and a seed (DESIGN §7).

A golden-set file is JSONL, one object a line:

    {"prompt": "a red star on the left", "category": "basic", "seed": 7, "stated": {"shape": "star", ...}}

(`prompt` may be spelled `text`; `category` defaults to "all", `seed` to the line's position among
the prompts; `stated`, the attributes the embedded judge checks, is optional), or plain text with
one prompt a line. Blank lines and lines starting with `#` are skipped. A bad line is refused with
its number.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..paths import ASSETS
from ..prompts import Prompt

DEFAULT_EMBEDDED = ASSETS / "golden" / "embedded.jsonl"
MAX_SEED = 2**32 - 1
MAX_PROMPT = 1000
MAX_PROMPTS = 100_000
DEFAULT_CATEGORY = "all"


@dataclass(frozen=True)
class GoldenSet:
    name: str  # the file's stem
    sha: str  # of the file's bytes: results name the exact set they were measured on
    prompts: tuple[Prompt, ...]

    @property
    def categories(self) -> list[str]:
        return sorted({p.category for p in self.prompts})

    def limited(self, limit: int | None) -> GoldenSet:
        """The first `limit` prompts (the shipped sets interleave categories, so every one stays)."""
        if limit is None or limit >= len(self.prompts):
            return self
        return GoldenSet(self.name, self.sha, self.prompts[:limit])


def _fail(name: str, line: int, what: str) -> UsageError:
    return UsageError(f"golden: line {line} of {name}: {what}")


def _parse_object(text: str, name: str, line: int, position: int) -> Prompt:
    try:
        row = json.loads(text)
    except ValueError as e:
        raise _fail(name, line, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise _fail(name, line, "must be a JSON object with 'prompt', 'category' and 'seed'")
    prompt = row.get("prompt", row.get("text"))
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail(name, line, "'prompt' must be non-empty text")
    if len(prompt) > MAX_PROMPT:
        raise _fail(name, line, f"'prompt' must be at most {MAX_PROMPT} characters, got {len(prompt)}")
    seed = row.get("seed", position)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise _fail(name, line, f"'seed' must be an integer in 0..{MAX_SEED}, got {seed!r}")
    category = row.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category.strip() or len(category) > 64:
        raise _fail(name, line, f"'category' must be a short non-empty name, got {category!r}")
    stated = row.get("stated", {})
    if not isinstance(stated, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in stated.items()):
        raise _fail(name, line, "'stated' must be an object of attribute names to values (text)")
    return Prompt(prompt.strip(), seed, category.strip(), stated)


def parse(text: str, name: str = "golden set") -> list[Prompt]:
    """Prompts from a golden file's text; UsageError names the first bad line."""
    out: list[Prompt] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("{", "[")):
            out.append(_parse_object(line, name, number, len(out)))
        elif len(line) > MAX_PROMPT:
            raise _fail(name, number, f"a prompt must be at most {MAX_PROMPT} characters, got {len(line)}")
        elif not line.isprintable():
            raise _fail(name, number, "a prompt must be printable text (this line holds control characters)")
        else:
            out.append(Prompt(line, len(out), DEFAULT_CATEGORY))
        if len(out) > MAX_PROMPTS:
            raise _fail(name, number, f"a golden set holds at most {MAX_PROMPTS} prompts")
    if not out:
        raise UsageError(f"golden: {name} holds no prompts (JSONL objects or one prompt a line)")
    return out


def load(path: str | Path) -> GoldenSet:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"golden: no file at {str(p)!r}; give a JSONL file or one prompt a line")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise _fail(p.name, line, "not UTF-8 text") from None
    return GoldenSet(p.stem, hashlib.sha256(data).hexdigest()[:16], tuple(parse(text, p.name)))


def write(path: str | Path, prompts: list[Prompt]) -> None:
    Path(path).write_text("".join(json.dumps(p.to_json(), sort_keys=False) + "\n" for p in prompts))


def from_world(n: int, seed: int) -> list[Prompt]:
    """A golden set of the embedded shapes world, spread evenly over its categories."""
    from ..world import sample_prompts

    return sample_prompts(n, seed)



def available(store=None) -> dict[str, Path]:
    """Golden sets by name: the shipped ones (assets/golden), then those kept in the data directory."""
    out = {p.stem: p for p in sorted(DEFAULT_EMBEDDED.parent.glob("*.jsonl"))}
    if store is not None and store.root is not None and (store.root / "golden").is_dir():
        out.update({p.stem: p for p in sorted((store.root / "golden").glob("*")) if p.suffix in (".jsonl", ".txt")})
    return out


def keep(store, path: str | Path) -> Path:
    """Check an uploaded golden file and keep a copy in the data directory under its own name (so
    background jobs and later sessions find it); returns the copy's path."""
    src = Path(path)
    load(src)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", src.stem).strip("-.") or "golden"
    dest = store.root / "golden" / f"{name}{src.suffix if src.suffix in ('.jsonl', '.txt') else '.jsonl'}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())
    return dest
