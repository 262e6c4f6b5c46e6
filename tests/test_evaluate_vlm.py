"""The VLM judge against a local fake OpenAI-compatible server started here (no network)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import free_port
from PIL import Image

from engine.errors import UsageError
from engine.evaluate import vlm as V
from engine.store import Store


class FakeEndpoint:
    """/v1/chat/completions answering from a queue of (status, body) replies, recording requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[tuple[int, object]] = []
        self.default = (200, {"quality": 7, "adherence": 8, "artifacts": 9, "reason": "fine"})
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, reply = outer.replies.pop(0) if outer.replies else outer.default
                if status == 200 and isinstance(reply, dict):
                    reply = {"choices": [{"message": {"role": "assistant", "content": json.dumps(reply)}}],
                             "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
                elif status == 200 and isinstance(reply, str):
                    reply = {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                data = json.dumps(reply if status == 200 else {"error": {"message": str(reply)}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def endpoint():
    e = FakeEndpoint()
    yield e
    e.server.shutdown()


def item(colour=(255, 0, 0), prompt="a red square"):
    return V.Item(prompt, V.png_bytes(Image.new("RGB", (8, 8), colour)))


def cfg(url, **kw):
    return V.VLMConfig(**{"url": url, "model": "judge-1", "retries": 1, "timeout": 10, **kw})


def test_request_shape_parsing_and_cache(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_VLM_API_KEY", "sk-test")
    store = Store(tmp_path / "d")
    items = [item(), item((0, 0, 255), "a blue square")]
    answer = '{"quality": 6, "adherence": 3, "artifacts": 10, "reason": "blue"}'
    endpoint.replies = [(200, f"```json\n{answer}\n```")]
    out = V.judge(cfg(endpoint.url), items, store)
    assert [o["adherence"] for o in out] == [3.0, 8.0] and out[0]["reason"] == "blue"
    assert not any(o["cached"] for o in out)
    r = endpoint.requests[0]
    assert r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sk-test"
    body = r["body"]
    assert body["model"] == "judge-1" and body["messages"][0]["role"] == "system"
    text, image = body["messages"][1]["content"]
    assert text == {"type": "text", "text": "Prompt: a red square"}
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == items[0].png
    # cached: asked again, nothing is sent
    again = V.judge(cfg(endpoint.url), items, store)
    assert len(endpoint.requests) == 2 and all(o["cached"] for o in again)
    assert [o["adherence"] for o in again] == [3.0, 8.0]
    # another model on the same endpoint is another judge
    V.judge(cfg(endpoint.url, model="judge-2"), items[:1], store)
    assert len(endpoint.requests) == 3
    assert V.summarize(out) == {"quality": 6.5, "adherence": 5.5, "artifacts": 9.5, "n": 2, "failed": 0, "calls": 2}


def test_estimate_counts_only_uncached_images_and_prices_them(endpoint, tmp_path):
    store = Store(tmp_path / "d")
    items = [item(), item((0, 255, 0), "a green square"), item((0, 0, 255), "a blue square")]
    c = cfg(endpoint.url, price_input=2.0, price_output=10.0)
    V.judge(c, items[:1], store)
    e = V.estimate(c, items, store)
    assert (e["images"], e["cached"], e["calls"]) == (3, 1, 2)
    per_call_in = V._tokens(V.RUBRIC) + V._tokens("a green square") + 10 + V.IMAGE_TOKENS
    assert e["input_tokens"] == 2 * per_call_in and e["output_tokens"] == 2 * V.OUTPUT_TOKENS
    assert e["cost_usd"] == pytest.approx((e["input_tokens"] * 2.0 + e["output_tokens"] * 10.0) / 1e6)
    assert "2 calls for 3 images (1 already judged)" in V.describe_estimate(e)
    assert V.estimate(cfg(endpoint.url), items)["cost_usd"] is None
    assert len(endpoint.requests) == 1  # estimating sends nothing


def test_errors(endpoint, tmp_path):
    store = Store(tmp_path / "d")
    # an unreadable answer is that image's error, not a made-up score, and is not cached
    endpoint.replies = [(200, "I think it is nice"), (200, {"quality": 11, "adherence": 5, "artifacts": 5})]
    out = V.judge(cfg(endpoint.url), [item(), item((1, 2, 3))], store)
    assert "no JSON object" in out[0]["error"] and "quality must be a number in 1..10" in out[1]["error"]
    assert V.summarize(out)["failed"] == 2 and V.summarize(out)["quality"] is None
    V.judge(cfg(endpoint.url), [item()], store)
    assert len(endpoint.requests) == 3
    # a server error is retried
    endpoint.replies = [(503, "busy")]
    assert V.judge(cfg(endpoint.url), [item((9, 9, 9))], store)[0]["quality"] == 7.0
    # a refused key stops the judge with the reason
    endpoint.replies = [(401, "bad key")]
    with pytest.raises(UsageError, match="refused the key \\(HTTP 401\\)"):
        V.judge(cfg(endpoint.url), [item((8, 8, 8))], store)
    endpoint.replies = [(400, "model not found"), (400, "model not found")]
    with pytest.raises(UsageError, match="HTTP 400: .*model not found"):
        V.judge(cfg(endpoint.url), [item((7, 7, 7))], store)
    with pytest.raises(UsageError, match="cannot reach"):
        V.judge(cfg(f"http://127.0.0.1:{free_port()}/v1", retries=0), [item((6, 6, 6))], store)
    for bad, msg in (({"url": "ftp://x"}, "url must start"), ({"model": ""}, "model must name"),
                     ({"price_input": -1.0}, "price_input")):
        with pytest.raises(UsageError, match=msg):
            V.VLMConfig(**{"url": endpoint.url, "model": "judge-1", **bad}).check()
