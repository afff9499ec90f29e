"""The web site in a real browser (issue 5).

The site is (re)built from the notebooks' stored outputs with `scripts/book.py build
--stored-outputs` (incremental, so quick when nothing changed; `make test` checks those outputs
with nbval). A local HTTP server on 127.0.0.1 serves `_build/html`, and Debian's headless Chromium,
driven by Playwright (no browser download: `executable_path`), loads every page and checks:

- no request leaves 127.0.0.1, and none fails;
- MathJax typeset every formula: no raw ``\\(``, ``\\[`` or ``$$`` left, no MathJax error;
- every Mermaid diagram is drawn as SVG, not shown as source;
- every ``<img>`` loaded with a non-zero size;
- no internal link is broken (target page and anchor exist);
- the page's Chinese text is present and drawn with a CJK font (no tofu);
- exercise solutions are hidden until their toggle is clicked.

Screenshots of the landing page and of one practice chapter go to `_build/screenshots/`.
Without Chromium, Playwright or jupyter-book the tests are skipped, except under CI (`$CI` set),
where they fail: .ci/run installs all three. Every test here is marked `slow` (they build the
whole site, then load every page in a browser): `pytest -m "not slow"` leaves them out.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from chromium import launched, missing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
PRACTICE_CHAPTER = "notebooks/05a_vae_in_practice.html"
CJK = re.compile(r"[\u4e00-\u9fff]")
# Fonts with Chinese glyphs, as Chromium reports the font it used (CSS.getPlatformFontsForNode).
CJK_FONT = re.compile(r"CJK|Han Sans|Han Serif|WenQuanYi|Noto Sans SC|Noto Serif SC|YaHei|PingFang")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Path:
    if not Path(sys.executable).with_name("jupyter-book").exists():
        missing("jupyter-book is not installed: run `make book` (installs the 'book' extra)")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "book.py"), "build", "--stored-outputs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        pytest.fail("the site does not build:\n" + (proc.stdout + proc.stderr)[-6000:])
    return HTML


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",  # ES modules need a JavaScript MIME type
        ".js": "text/javascript",
        ".woff": "font/woff",
        ".woff2": "font/woff2",
    }

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    with launched() as browser:
        yield browser


def site_pages(html: Path) -> list[str]:
    """Every HTML page of the site, relative to its root (theme and source folders excluded)."""
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not p.relative_to(html).parts[0].startswith("_")
    )


# --- one page in the browser ---------------------------------------------------------------------

WAIT_FOR_MATHJAX = """async () => {
  if (!window.MathJax) return {loaded: false};
  for (let i = 0; i < 300 && !(MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 100));
  await MathJax.startup.promise;
  return {loaded: true};
}"""

PAGE_FACTS = """() => {
  const main = document.querySelector('main') || document.body;
  const text = (root) => {
    const clone = root.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, .highlight').forEach(e => e.remove());
    return clone.textContent;
  };
  const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src,
    ok: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0
  }));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  return {
    prose: text(main),
    mathNodes: document.querySelectorAll('main .math').length,
    typeset: document.querySelectorAll('main mjx-container').length,
    mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
    images, links,
    paragraph: (document.querySelector('main p') || {}).textContent || '',
  };
}"""


def wait_for_images(page) -> None:
    page.evaluate(
        """() => Promise.all(Array.from(document.images).filter(i => !i.complete)
             .map(i => new Promise(r => { i.onload = i.onerror = r; })))"""
    )


def render_mermaid(page) -> list[str]:
    """Scroll each diagram into view (they render lazily) and return problems found."""
    problems = []
    diagrams = page.locator("main .mermaid")
    for i in range(diagrams.count()):
        diagram = diagrams.nth(i)
        diagram.scroll_into_view_if_needed()
        try:
            diagram.locator("svg").first.wait_for(state="attached", timeout=20_000)
        except Exception:
            problems.append(f"Mermaid diagram {i} was not drawn: {diagram.inner_text()[:80]!r}")
            continue
        if "Syntax error" in diagram.inner_text():
            problems.append(f"Mermaid diagram {i} has a syntax error")
    return problems


def font_of(page, selector: str) -> list[str]:
    """The platform fonts Chromium used to draw the element's text (DevTools CSS domain)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            return []
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        return [f["familyName"] for f in fonts]
    finally:
        cdp.detach()


def check_solutions(page) -> list[str]:
    """Every solution starts hidden; clicking its toggle shows it."""
    problems = []
    toggles = [
        ("details.sd-dropdown", "summary", ".sd-summary-content"),
        (".cell.tag_solution details", "summary", ".cell_input"),
    ]
    for outer, toggle, body in toggles:
        items = page.locator(f"main {outer}")
        for i in range(items.count()):
            item = items.nth(i)
            content = item.locator(body).first
            if content.is_visible():
                problems.append(f"{outer} #{i} is visible before its toggle is clicked")
                continue
            item.locator(toggle).first.click()
            try:
                content.wait_for(state="visible", timeout=5_000)
            except Exception:
                problems.append(f"{outer} #{i} stays hidden after its toggle is clicked")
    return problems


def settle(page, in_flight: set, quiet_ms: int = 500, limit_ms: int = 30_000) -> None:
    """Wait until no request of the page has been in flight for quiet_ms (at most limit_ms).

    Playwright's "networkidle" never came on some long pages in this Chromium, so the test
    counts the page's own requests instead.
    """
    quiet = waited = 0
    while quiet < quiet_ms and waited < limit_ms:
        page.wait_for_timeout(100)
        waited += 100
        quiet = quiet + 100 if not in_flight else 0


def visit(browser, base: str, path: str) -> dict:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests, failures, console_errors, in_flight = [], [], [], set()

    def started(request):
        requests.append(request.url)
        in_flight.add(request)

    def failed(request):
        failures.append(f"{request.url} ({request.failure})")
        in_flight.discard(request)

    page.on("request", started)
    page.on("requestfinished", lambda request: in_flight.discard(request))
    page.on("requestfailed", failed)
    page.on(
        "response",
        lambda r: failures.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None,
    )
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(base + path, wait_until="load")
    settle(page, in_flight)
    page.evaluate(WAIT_FOR_MATHJAX)
    wait_for_images(page)
    mermaid_problems = render_mermaid(page)
    facts = page.evaluate(PAGE_FACTS)
    facts["fonts"] = font_of(page, "main p")
    facts["solution_problems"] = check_solutions(page)
    facts["mermaid_problems"] = mermaid_problems
    facts["search_fields"] = page.locator(".search-button-field:visible").count()
    facts["main_text"] = page.locator("main").first.inner_text()
    settle(page, in_flight)
    facts.update(requests=requests, failures=failures, errors=console_errors, page=page)
    facts["context"] = context
    return facts


# --- the test -----------------------------------------------------------------------------------


def page_ids(html_file: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html_file.read_text(encoding="utf-8")))


def test_every_page_renders_offline_in_chromium(site, server, browser):
    pages = site_pages(site)
    assert "intro.html" in pages and PRACTICE_CHAPTER in pages, pages
    problems: dict[str, list[str]] = {}
    all_links: dict[str, set[str]] = {}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for path in pages:
        facts = visit(browser, server, path)
        page, issues = facts["page"], []
        try:
            foreign = [u for u in facts["requests"] if not u.startswith((server, "data:", "blob:"))]
            issues += [f"request to another host: {u}" for u in foreign]
            issues += [f"failed request: {f}" for f in facts["failures"]]
            issues += [f"JavaScript error: {e}" for e in facts["errors"]]
            if facts["mathNodes"] and facts["typeset"] < facts["mathNodes"]:
                issues.append(
                    f"MathJax typeset {facts['typeset']} of {facts['mathNodes']} formulas"
                )
            if facts["mathErrors"]:
                issues.append(f"{facts['mathErrors']} MathJax errors")
            for raw in ("\\(", "\\[", "$$"):
                if raw in facts["prose"]:
                    at = facts["prose"].index(raw)
                    issues.append(f"raw {raw} in the text: {facts['prose'][at - 30 : at + 50]!r}")
            issues += [f"image not loaded: {i['src']}" for i in facts["images"] if not i["ok"]]
            issues += facts["mermaid_problems"] + facts["solution_problems"]
            if facts["search_fields"] > 1:
                issues.append(f"{facts['search_fields']} search boxes on the page (one is enough)")
            if "google.colab" in facts["main_text"]:
                issues.append("the Colab install cell is shown (tag it remove-cell)")
            if path not in ("genindex.html",) and len(CJK.findall(facts["prose"])) < 2:
                issues.append("no Chinese text in the page")
            if CJK.search(facts["paragraph"]) and not any(
                CJK_FONT.search(f) for f in facts["fonts"]
            ):
                issues.append(f"Chinese text drawn without a CJK font: {facts['fonts']}")
            all_links[path] = set(facts["links"])
            if path == "intro.html":
                page.screenshot(path=str(SCREENSHOTS / "landing.png"), full_page=True)
            if path == PRACTICE_CHAPTER:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(SCREENSHOTS / "practice_chapter.png"))
                figure = page.locator("main .cell_output img").first
                if figure.count():
                    figure.scroll_into_view_if_needed()
                    figure.screenshot(path=str(SCREENSHOTS / "practice_chapter_figure.png"))
        finally:
            facts["context"].close()
        if issues:
            problems[path] = issues

    # internal links: the target file exists, and so does the anchor
    for path, links in all_links.items():
        for link in sorted(links):
            if not link.startswith(server):
                continue
            url = urllib.parse.urlsplit(link)
            rel = urllib.parse.unquote(url.path).lstrip("/") or "index.html"
            target = site / rel
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.setdefault(path, []).append(f"broken link: {link}")
            elif (
                url.fragment
                and target.suffix == ".html"
                and urllib.parse.unquote(url.fragment) not in page_ids(target)
            ):
                problems.setdefault(path, []).append(f"broken anchor: {link}")
    report = "\n".join(f"{p}:\n  " + "\n  ".join(i) for p, i in problems.items())
    assert not problems, f"site problems:\n{report}"
    assert (SCREENSHOTS / "landing.png").stat().st_size > 10_000


def test_chapter_pages_have_launch_and_download_buttons(site, server, browser):
    import yaml

    repo = yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))["repository"]["url"]
    org_repo = urllib.parse.urlsplit(repo).path.strip("/")
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(server + PRACTICE_CHAPTER, wait_until="load")
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        assert any(h.startswith("https://mybinder.org/v2/gh/" + org_repo) for h in hrefs)
        assert any(
            h.startswith(f"https://colab.research.google.com/github/{org_repo}/blob/")
            for h in hrefs
        )
        downloads = [
            h for h in hrefs if h.startswith(server) and h.endswith("05a_vae_in_practice.ipynb")
        ]
        assert downloads, "no .ipynb download link"
        response = page.request.get(downloads[0])
        assert response.ok and b'"cells"' in response.body()
    finally:
        context.close()


def test_chinese_search_finds_pages(site, server, browser):
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(server + "search.html?q=" + urllib.parse.quote("勘误"), wait_until="load")
        results = page.locator("#search-results ul.search li")
        results.first.wait_for(timeout=20_000)
        assert results.count() >= 2
    finally:
        context.close()
