"""Screenshot a tab of the running app in headless Chromium, after clicking a button.

    python scripts/screenshot.py --url http://127.0.0.1:7860/ --tab Compare --click Generate --out docs/compare.png
    python scripts/screenshot.py --user bo:battery-staple --click "Start voting" --out docs/rater.png  # signed in
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--tab", default=None)
    p.add_argument("--click", default=None, help="name of a button to click first")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait after the click")
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1100)
    p.add_argument("--user", default=None, help="USER:PASSWORD to sign in with first (apps run with --auth-file)")
    args = p.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        if args.user:
            user, _, password = args.user.partition(":")
            signed = page.request.post(args.url.rstrip("/") + "/login", form={"username": user, "password": password})
            if not signed.ok:
                raise SystemExit(f"--user: sign-in refused ({signed.status})")
        page.goto(args.url)
        page.wait_for_timeout(2000)
        if args.tab:
            page.get_by_role("tab", name=args.tab).click()
        if args.click:
            page.get_by_role("button", name=args.click).first.click()
            page.wait_for_timeout(args.wait * 1000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
