"""The built book in a real browser: every page of the smoke site, loaded in headless Chromium.

tests/site_build.py builds the book from the chapters' smoke runs (this module's name sorts after
test_chapter_*.py, so in a full ``pytest`` run the chapter tests have executed them already). The
site is served on 127.0.0.1 and every .html page is loaded once in Debian's Chromium, driven by
Selenium through Debian's chromedriver; the tests below then check, for every page:

* the browser console shows no error (SEVERE entries: JavaScript exceptions, failed loads);
* every <img> has loaded (complete, naturalWidth > 0);
* every mermaid block was rendered to an SVG that is not mermaid's error diagram;
* every math element was typeset by MathJax, without TeX errors or raw ``$$`` left in the text;
* every internal link answers 200 and its #anchor names an id on the target page;
* the page loads nothing from another origin (scripts, stylesheets, images, fonts, fetches).

Screenshots of the introduction and of one chapter are written to artifacts/screenshots/
(git-ignored) for a person to look at. Without /usr/bin/chromium and /usr/bin/chromedriver the
tests skip with the command that installs them (.ci/run does).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chapter_runner import ROOT
from site_build import build_site

pytestmark = pytest.mark.chapter

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
# Headless flags that keep Chromium off the network (machine notes: without the background-networking
# flags Chromium's own connections are refused by a closed network, many at a time).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1000",
)  # fmt: skip
SCREENSHOT_DIR = ROOT / "artifacts" / "screenshots"
# (page, file name): the introduction (mermaid) and the first full chapter (math, figures, tables)
SCREENSHOTS = {"book/intro.html": "intro.png", "book/core_concepts.html": "core_concepts.png"}
SCREENSHOT_MAX_HEIGHT = 6000  # px; a full page beyond that is cut
RENDER_TIMEOUT = 10.0  # seconds for mermaid and MathJax, which render after the page has loaded
ASSET_DIRS = ("_static/", "_sources/", "_images/", "_downloads/")
REDIRECT = re.compile(r"""<meta\s+http-equiv=["']refresh["']""", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# the site and its server


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory) -> Path:
    html, timings = build_site(tmp_path_factory.mktemp("smoke_site") / "site")
    print(f"smoke site: {json.dumps(timings)}")
    return html


class _Handler(http.server.SimpleHTTPRequestHandler):
    # the ES-module build of mermaid must come back as JavaScript, whatever /etc/mime.types says
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
        ".svg": "image/svg+xml", ".woff": "font/woff", ".woff2": "font/woff2", ".json": "application/json",
    }  # fmt: skip

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture(scope="session")
def server(smoke_site: Path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(smoke_site)))
    thread = threading.Thread(target=httpd.serve_forever, name="smoke-site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# the browser


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: install Debian's browser with `{INSTALL}` (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is pinned in requirements.txt")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # an explicit driver and browser: Selenium Manager (which would look for downloads) is not used
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(RENDER_TIMEOUT + 5)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------
# loading every page once and collecting what the checks need

WAIT_FOR_RENDERING = """
const done = arguments[arguments.length - 1];
const limit = Date.now() + arguments[0] * 1000;
const mathjax = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
mathjax.then(() => null, (e) => String(e)).then((mathError) => {
  document.querySelectorAll('img[loading="lazy"]').forEach((img) => { img.loading = 'eager'; });
  const pending = () => {
    const mermaid = [...document.querySelectorAll('.mermaid')].filter(
      (el) => !el.hasAttribute('data-mermaid-deferred') && !el.querySelector('svg'));
    const images = [...document.images].filter((img) => !img.complete);
    return mermaid.length + images.length;
  };
  const poll = () => {
    if (pending() === 0 || Date.now() > limit) { done({mathError: mathError, pending: pending()}); }
    else { setTimeout(poll, 100); }
  };
  poll();
});
"""

COLLECT = """
const outside = (node) => !node.parentElement || !node.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight');
const rawDollars = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (node.nodeValue.includes('$$') && outside(node)) { rawDollars.push(node.nodeValue.trim().slice(0, 80)); }
}
return {
  url: location.href,
  images: [...document.images].map((img) => ({src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth})),
  mermaid: [...document.querySelectorAll('.mermaid')].map((el) => ({
    svg: !!el.querySelector('svg'),
    error: !!el.querySelector('svg[aria-roledescription="error"]') || el.hasAttribute('data-mermaid-render-failed'),
    deferred: el.hasAttribute('data-mermaid-deferred'),
    text: (el.getAttribute('data-original-code') || el.textContent).trim().slice(0, 60),
  })),
  math: [...document.querySelectorAll('.math')].map((el) => ({
    typeset: !!el.querySelector('mjx-container') || el.tagName.toLowerCase() === 'mjx-container',
    error: !!el.querySelector('mjx-merror'),
    // MathJax's noundefined extension draws an unknown macro as red text instead of failing
    undefined: [...el.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')]
      .map((t) => t.textContent).filter((t) => t.startsWith(String.fromCharCode(92))),  // a backslash
    text: el.textContent.trim().slice(0, 60),
  })),
  mjxContainers: document.querySelectorAll('mjx-container').length,
  rawDollars: rawDollars,
  links: [...document.querySelectorAll('a[href]')].map((a) => a.href),
  assets: [
    ...[...document.querySelectorAll('script[src]')].map((e) => ['script', e.src]),
    ...[...document.querySelectorAll('link[href]')].map((e) => ['link rel=' + e.rel, e.href]),
    ...[...document.querySelectorAll('img[src], iframe[src], source[src], video[src], audio[src], embed[src]')].map((e) => [e.tagName.toLowerCase(), e.src]),
  ],
};
"""


def _same_origin(url: str, base: str) -> bool:
    return url.startswith(base) or url.split(":", 1)[0] in {"data", "blob", "about"}


def _screenshot(driver, path: Path) -> None:
    """A full-page PNG through the DevTools protocol (Selenium's own is the viewport only)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], SCREENSHOT_MAX_HEIGHT), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="session")
def pages(browser, server, smoke_site: Path) -> dict[str, dict]:
    """Every .html page of the site (assets' own folders aside) -> what the browser saw there."""
    from selenium.webdriver.support.ui import WebDriverWait

    names = sorted(
        p.relative_to(smoke_site).as_posix()
        for p in smoke_site.rglob("*.html")
        if not p.relative_to(smoke_site).as_posix().startswith(ASSET_DIRS)
    )
    assert "book/intro.html" in names, names
    for file_name in SCREENSHOTS.values():  # never let an old screenshot pass for a new one
        (SCREENSHOT_DIR / file_name).unlink(missing_ok=True)
    browser.get_log("browser")
    browser.get_log("performance")  # start clean
    start = time.perf_counter()
    seen: dict[str, dict] = {}
    for name in names:
        browser.get(server + name)
        if REDIRECT.search((smoke_site / name).read_text(errors="replace")):  # index.html -> the intro
            WebDriverWait(browser, 30).until(lambda d: d.current_url != server + name)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        waited = browser.execute_async_script(WAIT_FOR_RENDERING, RENDER_TIMEOUT)
        report = browser.execute_script(COLLECT)
        report["mathError"] = waited["mathError"]
        if name in SCREENSHOTS:
            _screenshot(browser, SCREENSHOT_DIR / SCREENSHOTS[name])
        report["console"] = browser.get_log("browser")
        report["requests"] = [
            message["params"]["request"]["url"]
            for entry in browser.get_log("performance")
            for message in [json.loads(entry["message"])["message"]]
            if message.get("method") == "Network.requestWillBeSent"
        ]
        seen[name] = report
    print(f"browser: {len(names)} pages in {time.perf_counter() - start:.1f}s")
    return seen


# ---------------------------------------------------------------------------------------------
# the checks


def _problems_message(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what}:\n" + "\n".join(problems)


def test_every_page_was_loaded(pages, smoke_site: Path) -> None:
    chapters = [p.relative_to(smoke_site).as_posix() for p in (smoke_site / "book").glob("*.html")]
    assert len(chapters) >= 2 and set(chapters) <= pages.keys()
    assert "index.html" in pages and pages["index.html"]["url"].endswith("book/intro.html"), "index.html should redirect to the introduction"


def test_no_console_errors(pages) -> None:
    problems = [
        f"{name}: [{entry['source'] if 'source' in entry else ''}] {entry['message']}"
        for name, report in pages.items()
        for entry in report["console"]
        if entry["level"] == "SEVERE"
    ]
    assert not problems, _problems_message(problems, "console errors")


def test_every_image_loads(pages) -> None:
    problems = [
        f"{name}: {img['src']} (complete={img['complete']}, naturalWidth={img['width']})"
        for name, report in pages.items()
        for img in report["images"]
        if not (img["complete"] and img["width"] > 0)
    ]
    assert not problems, _problems_message(problems, "images did not load")
    assert any(report["images"] for report in pages.values()), "no page has an image: are the chapters' figures missing?"


def test_mermaid_diagrams_render_as_svg(pages) -> None:
    problems = [
        f"{name}: {'an error diagram' if block['error'] else 'no <svg>'} for `{block['text']}...`"
        for name, report in pages.items()
        for block in report["mermaid"]
        if not block["deferred"] and (block["error"] or not block["svg"])
    ]
    assert not problems, _problems_message(problems, "mermaid diagrams not rendered")
    assert pages["book/intro.html"]["mermaid"], "the introduction's data-flow diagram is missing"


def test_math_renders(pages) -> None:
    problems = []
    for name, report in pages.items():
        if report["mathError"]:
            problems.append(f"{name}: MathJax failed: {report['mathError']}")
        for block in report["math"]:
            if not block["typeset"]:
                problems.append(f"{name}: not typeset: {block['text']!r}")
            elif block["error"]:
                problems.append(f"{name}: TeX error in {block['text']!r}")
            elif block["undefined"]:
                problems.append(f"{name}: undefined TeX macro {', '.join(block['undefined'])} in {block['text']!r}")
        if report["math"] and not report["mjxContainers"]:
            problems.append(f"{name}: has math but no mjx-container")
        problems += [f"{name}: raw $$ in the text: {text!r}" for text in report["rawDollars"]]
    assert not problems, _problems_message(problems, "math problems")
    assert any(report["mjxContainers"] for report in pages.values()), "no page has rendered math"


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


def test_internal_links_resolve(pages, server) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never a proxy
    fetched: dict[str, tuple[int, set[str] | None]] = {}

    def fetch(url: str) -> tuple[int, set[str] | None]:
        if url not in fetched:
            try:
                with opener.open(url, timeout=30) as response:
                    body = response.read()
                    is_html = response.headers.get_content_type() == "text/html"
                    status = response.status
            except urllib.error.HTTPError as error:
                error.close()
                fetched[url] = (error.code, None)
            else:
                ids = None
                if is_html:
                    parser = _Ids()
                    parser.feed(body.decode("utf-8", "replace"))
                    ids = parser.ids
                fetched[url] = (status, ids)
        return fetched[url]

    problems = []
    checked = 0
    for name, report in pages.items():
        for link in sorted(set(report["links"])):
            if not link.startswith(server):
                continue  # external links (citations' DOIs, the papermill site) are not followed
            target, _, fragment = link.partition("#")
            status, ids = fetch(target)
            checked += 1
            if status != 200:
                problems.append(f"{name}: {link} -> HTTP {status}")
            elif fragment and ids is not None and urllib.parse.unquote(fragment) not in ids:
                problems.append(f"{name}: {link} -> no id {urllib.parse.unquote(fragment)!r} on {target[len(server):]}")
    assert not problems, _problems_message(problems, "broken internal links")
    assert checked, "no internal links found"


def test_nothing_is_loaded_from_another_origin(pages, server) -> None:
    problems = [
        f"{name}: <{kind}> {url}"
        for name, report in pages.items()
        for kind, url in report["assets"]
        if not _same_origin(url, server)
    ]
    problems += [
        f"{name}: request to {url}"
        for name, report in pages.items()
        for url in report["requests"]
        if not _same_origin(url, server)
    ]
    assert not problems, _problems_message(problems, "references to other origins")


def test_screenshots_kept(pages) -> None:
    for page, file_name in SCREENSHOTS.items():
        path = SCREENSHOT_DIR / file_name
        assert page in pages and path.exists(), f"no screenshot of {page}"
        png = path.read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, f"{path} is not a real screenshot ({len(png)} bytes)"
