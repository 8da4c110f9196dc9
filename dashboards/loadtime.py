"""How long the dashboard takes to show the overview on a slow connection, in Debian's Chromium
with the network throttled by the DevTools protocol. A measurement, not a test:

    python -m dashboards.loadtime --url http://127.0.0.1:8000 --user nurse1 --password …

Prints, per network profile, the bytes the browser fetched and the time from opening
/dashboard to the login form, and from pressing "Log in" to the first patient row.
"""

from __future__ import annotations

import argparse
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# (name, download kbit/s, upload kbit/s, round trip ms): Chrome DevTools' presets.
PROFILES = [
    ("no throttling", 0, 0, 0),
    ("Fast 3G", 1_600, 750, 150),
    ("Slow 3G", 500, 500, 400),
]


def _median(xs: list[float] | list[int]) -> float:
    return float(sorted(xs)[len(xs) // 2])


def measure(url: str, user: str, password: str, runs: int) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True
        )
        print("| network | runs | fetched kB | login form s (median) | overview s (median) |")
        print("|---|---|---|---|---|")
        for name, down, up, rtt in PROFILES:
            form_s, overview_s, fetched = [], [], []
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                if down:
                    cdp.send(
                        "Network.emulateNetworkConditions",
                        {
                            "offline": False,
                            "latency": rtt,
                            "downloadThroughput": down * 1000 / 8,
                            "uploadThroughput": up * 1000 / 8,
                        },
                    )
                sizes: list[int] = []
                cdp.on(
                    "Network.loadingFinished",
                    lambda e, sizes=sizes: sizes.append(int(e["encodedDataLength"])),
                )
                t0 = time.perf_counter()
                page.goto(f"{url}/dashboard")
                page.get_by_role("button", name="Log in").wait_for(timeout=120_000)
                form_s.append(time.perf_counter() - t0)
                page.get_by_label("Username").fill(user)
                page.get_by_label("Password").fill(password)
                t1 = time.perf_counter()
                page.get_by_role("button", name="Log in").click()
                page.locator("#patients tbody tr").first.wait_for(timeout=120_000)
                overview_s.append(time.perf_counter() - t1)
                fetched.append(sum(sizes))
                context.close()
            print(
                f"| {name} | {runs} | {_median(fetched) / 1000:.0f} | {_median(form_s):.2f} |"
                f" {_median(overview_s):.2f} |"
            )
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    measure(args.url.rstrip("/"), args.user, args.password, args.runs)


if __name__ == "__main__":
    main()
