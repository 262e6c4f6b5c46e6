"""Arena tab: blind votes between two images of the same prompt and seed.

Nothing that identifies a model or its settings reaches the browser before the vote: the battle
travels as an opaque token, the images as uncompressed PNGs (of one size in bytes) under names that
trace to nothing, the labels read only "Left" and "Right". The vote's answer reveals both settings in place; "Next
battle" loads the next one.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import gradio as gr

from engine.arena import battles, votes
from engine.errors import UsageError

from .state import Lab

BUTTONS = (("⬅ Left is better", "left"), ("Tie", "tie"), ("Both are bad", "both_bad"), ("Right is better ➡", "right"))
INTRO = ("Two images of the same prompt, made by two model settings you cannot see. Pick the better one "
         "(look at the shapes, faces, digits and fine textures; open an image full screen to zoom). "
         "Who made which is shown after your vote. Keys: ← left, → right, T tie, B both bad, N next battle, "
         "U undo.")
# The vote keys: a key clicks the button of that id when it is on screen (never while typing).
KEYS = {"ArrowLeft": "lab-vote-left", "ArrowRight": "lab-vote-right", "t": "lab-vote-tie", "b": "lab-vote-both_bad",
        "n": "lab-next", "u": "lab-undo"}
HEAD = """<script>
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
  const id = (KEYS)[e.key.length === 1 ? e.key.toLowerCase() : e.key];
  const button = id && document.getElementById(id);
  if (button && button.offsetParent !== null && !button.disabled) { e.preventDefault(); button.click(); }
});
</script>""".replace("KEYS", json.dumps(KEYS))
NO_BATTLES = ("**No battles left for you.** Thank you! More come when an admin prepares them (Leaderboard tab → "
              "*Prepare battles*, or `python -m engine arena prepare`).")
SERVED = Path(tempfile.gettempdir()) / "distillation-lab-arena"


def _rater(text: str | None, request: gr.Request | None) -> str:
    """The signed-in user when the app runs with `auth`, else the name typed in."""
    user = getattr(request, "username", None) if request is not None else None
    return votes.check_rater(user or text)


def _status(lab: Lab, rater: str) -> str:
    done, total = lab.store.rater_progress(rater)
    left = total - done
    return f"Voting as **{rater}** · {done} voted · {left} to go"


def _show(lab: Lab, battle: dict | None, rater: str, note: str = "") -> tuple:
    """Outputs that put a battle (or the end) on screen, unrevealed. Two of them are property
    updates (the rows' visibility), the rest plain values: Gradio builds a component per update,
    the largest part of a call's cost after the database's."""
    status = _status(lab, rater) + (f"  \n{note}" if note else "")
    if battle is None:
        return ("", None, None, "", NO_BATTLES, status, gr.update(visible=False), gr.update(visible=False))
    left, right = (_as_served(lab, battle, name) for name in battles.files(battle))
    return (battle["token"], left, right, battle["prompt"], "", status, gr.update(visible=True),
            gr.update(visible=False))


def _as_served(lab: Lab, battle: dict, stored: str) -> str:
    """The file a rater's browser receives for one side of a battle: the image at its own size
    (the page scales it up, pixels kept square) as an uncompressed PNG, whose size in bytes is the
    same for every image of its size (a compressed file's size tells a detailed image from a plain
    one), under a name of its own that cannot be traced to the stored file. Made once, in the
    system's temporary folder (served from there, never from the data directory); every rater of
    the battle gets the same file, and the stored image is read only the first time."""
    name = hashlib.sha256(f"{battle['token']}/{stored}".encode()).hexdigest()[:24]
    path = SERVED / f"{name}.png"
    if not path.exists():
        SERVED.mkdir(exist_ok=True)
        battles.image(lab.store, stored).save(path, compress_level=0)
    return str(path)


def next_battle(lab: Lab, rater_text: str, request: gr.Request = None) -> tuple:
    try:
        rater = _rater(rater_text, request)
    except UsageError as e:
        raise gr.Error(str(e), print_exception=False) from None
    return _show(lab, battles.next_battle(lab.store, rater), rater)


def vote(lab: Lab, token: str, rater_text: str, outcome: str, request: gr.Request = None) -> tuple:
    """Record the vote, then reveal: which setting made each side."""
    try:
        rater = _rater(rater_text, request)
        shown = votes.cast(lab.store, token, rater, outcome)["reveal"]
    except UsageError as e:
        raise gr.Error(str(e), print_exception=False) from None
    picked = {"left": "the **left** image", "right": "the **right** image", "tie": "a **tie**",
              "both_bad": "**both bad**"}[outcome]
    text = (f"You chose {picked}.  \n⬅ Left · **{shown['left']}**  \nRight · **{shown['right']}** ➡")
    return text, _status(lab, rater), gr.update(visible=False), gr.update(visible=True)


def undo(lab: Lab, rater_text: str, request: gr.Request = None) -> tuple:
    """Withdraw one's last vote and show that battle again."""
    try:
        rater = _rater(rater_text, request)
        battle = votes.undo(lab.store, rater)
    except UsageError as e:
        raise gr.Error(str(e), print_exception=False) from None
    if battle is None:
        raise gr.Error("undo: you have no vote to withdraw", print_exception=False)
    return _show(lab, battle, rater, note="Your last vote was withdrawn: vote on this battle again.")


def build(lab: Lab) -> dict:
    """Lay out the tab inside the current Blocks context; returns the components tests use."""
    SERVED.mkdir(exist_ok=True)
    # Served files go to browsers from where they are (Gradio would otherwise hash and copy each
    # into its cache on every battle shown); the folder holds served files and nothing else.
    gr.set_static_paths([SERVED])
    gr.Markdown(INTRO)
    with gr.Row():
        rater = gr.Textbox(label="Your name (ignored when you are signed in)", max_lines=1, scale=3)
        start = gr.Button("Start voting", variant="primary", scale=1)
    token = gr.Textbox(visible=False)  # the battle on screen, as an opaque token
    prompt = gr.Textbox(label="Prompt", interactive=False, max_lines=4)  # plain text: never rendered
    with gr.Row(equal_height=True, elem_classes="lab-battle"):
        left = gr.Image(label="Left", type="filepath", format="png", interactive=False, height=420,
                        buttons=["fullscreen"])
        right = gr.Image(label="Right", type="filepath", format="png", interactive=False, height=420,
                         buttons=["fullscreen"])
    with gr.Row(visible=False) as vote_row:
        vote_buttons = [(gr.Button(text, variant="primary" if o in ("left", "right") else "secondary",
                                   elem_id=f"lab-vote-{o}"), o) for text, o in BUTTONS]
    reveal = gr.Markdown()
    with gr.Row(visible=False) as after_row:
        next_btn = gr.Button("Next battle ▶", variant="primary", elem_id="lab-next")
        undo_btn = gr.Button("Undo my vote", elem_id="lab-undo")
    status = gr.Markdown()

    show_outputs = [token, left, right, prompt, reveal, status, vote_row, after_row]
    vote_outputs = [reveal, status, vote_row, after_row]
    arena = dict(concurrency_limit=16, concurrency_id="arena")
    def load(r: str, request: gr.Request):
        return next_battle(lab, r, request)

    def voter(outcome: str):
        def cast(t: str, r: str, request: gr.Request):
            return vote(lab, t, r, outcome, request)
        return cast

    def withdraw(r: str, request: gr.Request):
        return undo(lab, r, request)

    start.click(load, [rater], show_outputs, api_name="arena_next", **arena)
    next_btn.click(load, [rater], show_outputs, api_visibility="private", **arena)
    rater.submit(load, [rater], show_outputs, api_visibility="private", **arena)
    for button, outcome in vote_buttons:
        button.click(voter(outcome), [token, rater], vote_outputs, api_visibility="private", **arena)
    undo_btn.click(withdraw, [rater], show_outputs, api_name="arena_undo", **arena)

    def arena_vote(token: str, rater: str, outcome: str, request: gr.Request) -> dict:
        """Vote on a battle by its token: outcome left, right, tie or both_bad. Returns the reveal."""
        try:
            return votes.cast(lab.store, token, _rater(rater, request), outcome)["reveal"]
        except UsageError as e:
            raise gr.Error(str(e), print_exception=False) from None

    gr.api(arena_vote, api_name="arena_vote", **arena)
    return {"rater": rater, "start": start, "token": token, "images": [left, right], "prompt": prompt,
            "reveal": reveal, "next": next_btn, "undo": undo_btn, "status": status,
            "vote": {o: b for b, o in vote_buttons}}
