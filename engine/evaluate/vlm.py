"""A vision-language judge through any OpenAI-compatible chat endpoint (`POST {url}/chat/completions`).

Each image is sent once with its prompt and a fixed rubric; the model answers a JSON object of
three 1-10 scores (quality, adherence, artifacts: 10 = none visible) and a short reason. Before
anything is sent, `estimate` gives the number of calls (images not already judged) and their
expected cost from the prices the user states. Answers are cached in the lab database, keyed by
endpoint, model, rubric, prompt and image bytes, so nothing is judged (or paid for) twice.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from ..errors import UsageError

RUBRIC_VERSION = 1
RUBRIC = (
    "You judge images made by a text-to-image model. Given the prompt and the image, answer only a JSON "
    "object {\"quality\": q, \"adherence\": a, \"artifacts\": r, \"reason\": \"...\"} with integers 1-10: "
    "quality = overall visual quality; adherence = how fully the image shows what the prompt states; "
    "artifacts = 10 when no visible artifacts (smears, broken shapes, noise), 1 when the image is ruined. "
    "The reason is one short sentence."
)
SCORES = ("quality", "adherence", "artifacts")
IMAGE_TOKENS = 85  # an OpenAI low-detail image; other endpoints count differently, so this is an estimate
OUTPUT_TOKENS = 60  # a typical answer to the rubric
KEY_ENVS = ("LAB_VLM_API_KEY", "OPENAI_API_KEY")


@dataclass
class VLMConfig:
    url: str = ""  # the endpoint's base, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is added)
    model: str = ""  # the model name the endpoint serves
    api_key_env: str = "LAB_VLM_API_KEY"  # environment variable holding the key (else OPENAI_API_KEY; none: no key)
    price_input: float | None = None  # USD per million input tokens (None: cost unknown)
    price_output: float | None = None  # USD per million output tokens
    max_tokens: int = 200  # cap on each answer
    timeout: float = 60.0  # seconds per request
    retries: int = 2  # extra tries after HTTP 429 / 5xx or a dropped connection

    def check(self) -> None:
        if not self.url or not re.match(r"^https?://", self.url):
            raise UsageError(f"vlm url must start with http:// or https://, got {self.url!r}")
        if not self.model or not self.model.strip():
            raise UsageError("vlm model must name the model the endpoint serves, got ''")
        for name in ("price_input", "price_output"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise UsageError(f"vlm {name} must be a non-negative number of USD per million tokens, got {v}")
        if not isinstance(self.max_tokens, int) or not 16 <= self.max_tokens <= 4096:
            raise UsageError(f"vlm max_tokens must be an integer in 16..4096, got {self.max_tokens}")

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def api_key(self) -> str | None:
        for name in (self.api_key_env, *KEY_ENVS):
            if name and os.environ.get(name):
                return os.environ[name]
        return None


@dataclass(frozen=True)
class Item:
    """One image to judge: its prompt and PNG bytes."""
    prompt: str
    png: bytes


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def cache_key(cfg: VLMConfig, item: Item) -> str:
    h = hashlib.sha256()
    for part in (cfg.endpoint, cfg.model, str(RUBRIC_VERSION), item.prompt):
        h.update(part.encode() + b"\0")
    h.update(item.png)
    return h.hexdigest()


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))  # ~4 characters per token for English text


def estimate(cfg: VLMConfig, items: list[Item], store=None) -> dict:
    """Calls the judge would make (images not judged before) and their expected tokens and cost."""
    todo = [it for it in items if store is None or store.vlm_judgment(cache_key(cfg, it)) is None]
    tokens_in = sum(_tokens(RUBRIC) + _tokens(it.prompt) + 10 + IMAGE_TOKENS for it in todo)
    tokens_out = OUTPUT_TOKENS * len(todo)
    out = {"images": len(items), "cached": len(items) - len(todo), "calls": len(todo),
           "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": None}
    if cfg.price_input is not None and cfg.price_output is not None:
        out["cost_usd"] = round((tokens_in * cfg.price_input + tokens_out * cfg.price_output) / 1e6, 6)
    return out


def estimate_for(cfg: VLMConfig, prompts: list[str]) -> dict:
    """The most the judge would cost for one image of each prompt, before any image exists (nothing
    counted as judged already)."""
    return estimate(cfg, [Item(p, b"") for p in prompts])


def describe_estimate(e: dict) -> str:
    cost = (f"about ${e['cost_usd']:.4f}" if e["cost_usd"] is not None
            else "cost unknown (give the prices per million tokens)")
    return (f"VLM judge: {e['calls']} calls for {e['images']} images ({e['cached']} already judged), "
            f"~{e['input_tokens']} input + ~{e['output_tokens']} output tokens, {cost}")


def request_body(cfg: VLMConfig, item: Item) -> dict:
    image_url = "data:image/png;base64," + base64.b64encode(item.png).decode()
    return {
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": RUBRIC},
            {"role": "user", "content": [
                {"type": "text", "text": f"Prompt: {item.prompt}"},
                {"type": "image_url", "image_url": {"url": image_url, "detail": "low"}},
            ]},
        ],
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }


def parse_reply(content: str) -> dict:
    """The three scores (ints 1-10) and the reason from an answer; ValueError if it has none."""
    text = content.strip()
    fenced = re.search(r"\{.*\}", text, re.DOTALL)  # tolerate ```json fences and words around the object
    if not fenced:
        raise ValueError(f"no JSON object in the answer: {text[:120]!r}")
    data = json.loads(fenced.group(0))
    out = {}
    for k in SCORES:
        v = data.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 10:
            raise ValueError(f"{k} must be a number in 1..10, got {v!r}")
        out[k] = float(v)
    out["reason"] = str(data.get("reason", ""))[:300]
    return out


def _post(cfg: VLMConfig, body: dict) -> dict:
    headers = {"Content-Type": "application/json"}
    key = cfg.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode()
    for attempt in range(cfg.retries + 1):
        req = urllib.request.Request(cfg.endpoint, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            if e.code in (429, 500, 502, 503, 504) and attempt < cfg.retries:
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if e.code in (401, 403):
                raise UsageError(f"vlm: {cfg.endpoint} refused the key (HTTP {e.code}); set ${cfg.api_key_env} "
                                 f"or OPENAI_API_KEY: {detail}") from None
            raise UsageError(f"vlm: {cfg.endpoint} answered HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt < cfg.retries:
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            reason = getattr(e, "reason", e)
            raise UsageError(f"vlm: cannot reach {cfg.endpoint}: {reason}") from None
    raise AssertionError("unreachable")


def judge(cfg: VLMConfig, items: list[Item], store=None,
          progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Scores for every item, from the cache or the endpoint. An answer that cannot be read gives
    {"error": ...} for that item (not cached); an endpoint that refuses or cannot be reached
    raises UsageError."""
    cfg.check()
    out = []
    for i, item in enumerate(items):
        key = cache_key(cfg, item)
        cached = store.vlm_judgment(key) if store is not None else None
        if cached is not None:
            out.append({**cached, "cached": True})
        else:
            reply = _post(cfg, request_body(cfg, item))
            try:
                scores = parse_reply(reply["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError, ValueError) as e:
                out.append({"error": f"unreadable answer: {str(e)[:200]}"})
            else:
                usage = reply.get("usage") or {}
                scores["usage"] = {"input": usage.get("prompt_tokens"), "output": usage.get("completion_tokens")}
                if store is not None:
                    store.save_vlm_judgment(key, cfg.endpoint, cfg.model, scores)
                out.append({**scores, "cached": False})
        if progress:
            progress(i + 1, len(items))
    return out


def summarize(results: list[dict]) -> dict:
    """Mean of each score over the readable answers, with the number that could not be read."""
    ok = [r for r in results if "error" not in r]
    out = {k: (round(sum(r[k] for r in ok) / len(ok), 3) if ok else None) for k in SCORES}
    out.update({"n": len(ok), "failed": len(results) - len(ok), "calls": sum(1 for r in ok if not r.get("cached"))})
    return out
