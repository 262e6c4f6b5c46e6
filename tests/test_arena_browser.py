"""The Arena in headless Chromium, served as raters reach it (`python -m app --arena-only`): vote
through every battle, check each reveal against the database, and check that nothing the browser
received before a vote (page, image URLs, every fetched response) names a model or a setting."""


import pytest
from helpers import arena_store, assert_blind, forbidden, serve

from app.arena import HEAD
from app.blocks import build_arena_app
from app.state import Lab
from engine.arena import settings as S

# Every response the page fetches, streams included, is copied into window.__seen chunk by chunk.
CAPTURE = """
window.__seen = [];
const _fetch = window.fetch;
window.fetch = async (...args) => {
  const resp = await _fetch(...args);
  const url = String(args[0] && args[0].url ? args[0].url : args[0]);
  if (resp.body) {
    const reader = resp.clone().body.getReader();
    const text = new TextDecoder();
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        window.__seen.push([url, text.decode(value)]);
      }
    })().catch(() => {});
  }
  return resp;
};
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """The arena alone, as `python -m app --arena-only` serves it to raters."""
    store = arena_store(tmp_path_factory.mktemp("arena-browser"), tiny_model_dir, n=3)
    demo = build_arena_app(Lab(store))
    yield serve(demo, head=HEAD), store
    demo.close()


def blind_now(page, words, where):
    assert_blind(page.content(), words, f"{where}: the page")
    for src in page.locator("img").evaluate_all("els => els.map(e => e.src)"):
        assert_blind(src, words, f"{where}: an image URL")
    seen = page.evaluate("window.__seen")
    for url, body in seen:
        assert_blind(url + body, words, f"{where}: the response of {url}")
    return seen


def test_vote_through_every_battle_and_check_each_reveal(served, chromium, tiny_model_dir, tmp_path):
    url, store = served
    words = forbidden(store, tiny_model_dir)
    page = chromium.new_page(viewport={"width": 1300, "height": 1100})
    page.add_init_script(CAPTURE)
    page.goto(url)
    page.get_by_label("Your name").fill("hana")
    page.get_by_role("button", name="Start voting").click()
    choices = ["⬅ Left is better", "Right is better ➡", "Tie"]
    for i, choice in enumerate(choices):
        page.locator("img[src*='/file=']").first.wait_for(timeout=60_000)
        page.locator("img[src*='/file=']").nth(1).wait_for(timeout=60_000)
        page.wait_for_timeout(500)  # let the battle's responses finish arriving
        seen = blind_now(page, words, f"battle {i + 1} before the vote")
        assert any("/file=" in body for _, body in seen), "the capture saw the battle's response"
        if i == 0:
            page.screenshot(path=str(tmp_path / "arena-before.png"), full_page=True)
        page.get_by_role("button", name=choice).click()
        page.get_by_text("You chose").wait_for(timeout=60_000)
        vote = [v for v in store.votes() if v["rater"] == "hana"][-1]
        left, right = S.label(vote["left_setting"]), S.label(vote["right_setting"])
        text = page.inner_text("body")
        assert f"Left · {left}" in text and f"Right · {right}" in text
        assert vote["outcome"] == ["left", "right", "tie"][i]
        if i == 0:
            page.screenshot(path=str(tmp_path / "arena-reveal.png"), full_page=True)
        page.evaluate("window.__seen = []")  # what came with the reveal names the models
        if i == len(choices) - 1:
            # undo brings this battle back, unrevealed, and the new vote replaces the old one; by the
            # keys this time (U undo, ← left, N next)
            page.keyboard.press("u")
            page.get_by_text("withdrawn").wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            blind_now(page, words, "the battle brought back by undo")
            page.keyboard.press("ArrowLeft")
            page.get_by_text("You chose").wait_for(timeout=60_000)
            page.keyboard.press("n")
        else:
            page.get_by_role("button", name="Next battle ▶").click()
    page.get_by_text("No battles left").wait_for(timeout=60_000)
    mine = [v for v in store.votes() if v["rater"] == "hana"]
    assert [v["outcome"] for v in mine] == ["left", "right", "left"]
    assert [v["after_undo"] for v in mine] == [0, 0, 1]
    assert len({v["battle_id"] for v in mine}) == 3 and store.undo_count() == 1
    page.close()


def test_a_prompt_with_markdown_and_html_shows_as_plain_text(chromium, tiny_model_dir, tmp_path):
    """An admin's typed prompt reaches raters as the text it is: no image loaded, no link, no markup."""
    from helpers import ARENA_STUDENT, ARENA_TEACHER

    from engine.arena import battles
    from engine.arena.settings import PrepareConfig
    from engine.families.embedded import EmbeddedFamily
    from engine.store import Store

    hostile = ('**bold** <img src="http://127.0.0.1:9/x.png"> ![p](http://127.0.0.1:9/y.png) '
               '[click](http://evil.example/) <script>window.__pwned = 1</script>')
    store = Store(tmp_path / "d")
    family = EmbeddedFamily.load(tiny_model_dir)
    store.register_model("zebra-teacher-qx", tiny_model_dir, "embedded")
    store.register_model("zebra-student-qx", tiny_model_dir, "embedded", parent="zebra-teacher-qx")
    battles.prepare(store, [ARENA_TEACHER, ARENA_STUDENT], battles.typed_prompts([hostile]), PrepareConfig(n=1),
                    load=lambda name: family)
    demo = build_arena_app(Lab(store))
    page = chromium.new_page(viewport={"width": 1300, "height": 1100})
    try:
        page.goto(serve(demo))
        page.get_by_label("Your name").fill("ivo")
        page.get_by_role("button", name="Start voting").click()
        page.locator("img[src*='/file=']").nth(1).wait_for(timeout=60_000)
        assert page.get_by_label("Prompt").input_value() == hostile
        sources = page.locator("img").evaluate_all("els => els.map(e => e.src)")
        assert not [s for s in sources if "127.0.0.1:9" in s]
        assert page.locator("a[href*='evil.example']").count() == 0
        assert page.locator("strong", has_text="bold").count() == 0
        assert page.evaluate("window.__pwned") is None
    finally:
        page.close()
        demo.close()
