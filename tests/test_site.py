"""The rendered website, tested in a real browser: Playwright drives Debian's ``chromium`` (headless).

`make test` builds the book first; these tests serve ``_build/html`` on 127.0.0.1 and open every
page of it as a first-time visitor (a fresh browser context each), and fail on

- a console error or an uncaught exception in a page's scripts;
- a request to the local site that fails or answers 4xx/5xx;
- any request to another host (the site must work offline: such requests are aborted and listed);
- a plotly figure (``.course-plotly``, rendered by book/_ext/course_ext.py) without its drawn SVG,
  or drawn wider than its place on the page (a clipped subplot), or a CircuitsVis view not drawn;
- a link to a page of the site, or to an anchor of one, that does not exist;
- a stderr output of an executed notebook, a path of the build machine in the page's text, or a
  progress bar drawn once per redraw (course_ext folds each bar to its last state);
- a code cell that scrolls sideways at desktop width (the notebooks' code is formatted to
  ``CODE_LINE_LENGTH`` columns, which ``book/_static/course.css`` fits in the column);
- at phone width (400 px), anything outside a scrolling box of its own (a code block, a display
  equation, a table) that makes the page wider than the screen.

They also check the landing page, each chapter page's lab links (Colab, download, solution page),
the sidebar's page titles and the search, and save screenshots (desktop and phone) into
``_build/test-artifacts/``.

Playwright never downloads a browser here: the tests launch the ``chromium`` on PATH (Debian:
``apt-get install chromium``; `.ci/run` installs it), or the browser named by ``COURSE_CHROMIUM``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "_build" / "test-artifacts"
CHROMIUM_ENV = "COURSE_CHROMIUM"
CHAPTER_PAGE = re.compile(r"^book/(\d\d_[a-z0-9_]+)\.html$")
COLAB = "https://colab.research.google.com/github"
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 400, "height": 860}
#: How long a page may take to draw its plotly figures: the full suite loads both cores, and a
#: page with five figures once needed more than 15 s there (a drawn figure is still required).
FIGURE_TIMEOUT_MS = 60_000
# Words a reader may search for, and a page the results must list.
SEARCHES = {"LoRA": "book/02_lora.html", "induction": "book/03_caching_hooks.html"}
# Every JS-drawn plotly figure has its <svg class="main-svg"> once plotly.js has run.
UNDRAWN_FIGURES_JS = """() => [...document.querySelectorAll('.course-plotly')]
    .filter(el => !el.querySelector('svg.main-svg')).map(el => el.id || '(no id)')"""
# What the page was like, for an undrawn figure's report: did plotly.js load, did newPlot start?
UNDRAWN_FIGURE_STATE_JS = """(id) => { const el = document.getElementById(id);
    return `window.Plotly ${typeof window.Plotly}, document ${document.readyState}, ` +
           `newPlot started ${el.classList.contains('js-plotly-plot')}, ${el.childElementCount} children, ` +
           `width ${el.getBoundingClientRect().width}px`; }"""
# A CircuitsVis view (utils.attention.attention_view) is a div that React fills once the bundle has run
# (its own <script> sits inside the div, so a drawn view is one with another child).
UNDRAWN_VIEWS_JS = """() => [...document.querySelectorAll('div[id^="circuits-vis-"]')]
    .filter(el => !el.querySelector(':scope > :not(script)')).map(el => el.id)"""
# Only a parsed document can say so: before the parser reaches the first figure there is none to wait for.
ALL_FIGURES_DRAWN_JS = (f"() => document.readyState === 'complete' && ({UNDRAWN_FIGURES_JS})().length === 0"
                        f" && ({UNDRAWN_VIEWS_JS})().length === 0")
# A figure drawn wider than its place on the page is cut at the right.
CLIPPED_FIGURES_JS = """() => [...document.querySelectorAll('.course-plotly')].filter(el => {
    const svg = el.querySelector('svg.main-svg');
    return svg && svg.getBoundingClientRect().width > el.getBoundingClientRect().width + 1; })
    .map(el => `${el.id} (${Math.round(el.querySelector('svg.main-svg').getBoundingClientRect().width)}px drawn in ` +
                `${Math.round(el.getBoundingClientRect().width)}px)`)"""
STDERR_OUTPUTS_JS = """() => [...document.querySelectorAll('div.output.stderr')]
    .map(el => el.innerText.trim().split('\\n')[0].slice(0, 160))"""
# A progress bar drawn more than once in one output, one line per redraw: the same bar's line at a
# count short of its total and again after it ("desc:  40%|####  | 4/10 ..."). Two bars of one name
# that each show their final count are two bars.
REPEATED_PROGRESS_BARS_JS = r"""() => [...document.querySelectorAll('div.output pre')].flatMap(pre => {
    const bars = pre.innerText.split('\n').map(line => line.match(/^(.*?)\s*\d+%\|.*?\|\s*(\d+)\/(\d+)/)).filter(Boolean);
    const redrawn = bars.filter(([, name, done, total]) => done !== total && bars.filter(bar => bar[1] === name).length > 1);
    return [...new Set(redrawn.map(bar => bar[1]))].map(name => `"${name}" drawn once per redraw`); })"""
# A code cell wider than its box: its longest line, and the widths.
SCROLLING_CODE_JS = r"""() => [...document.querySelectorAll('div.cell_input pre')]
    .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
    .map(pre => `"${pre.innerText.split('\n').reduce((a, b) => b.length > a.length ? b : a, '').trim().slice(0, 60)}" ` +
                `(${pre.scrollWidth}px of code in ${pre.clientWidth}px)`)"""
# At phone width: what makes the page wider than the screen, outside a box that scrolls (or clips) on its own.
OVERFLOW_JS = """() => {
    const limit = document.documentElement.clientWidth + 1;
    const boxed = el => ['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(el).overflowX)
                        && el.getBoundingClientRect().right <= limit;
    const found = [];
    for (const el of document.querySelectorAll('.bd-article *')) {
        if (el.getBoundingClientRect().right <= limit) continue;
        let box = el.parentElement;
        while (box && !boxed(box)) box = box.parentElement;
        if (!box) found.push(`<${el.tagName.toLowerCase()} class="${el.className}"> reaches ` +
                             `${Math.round(el.getBoundingClientRect().right)}px: "${el.textContent.trim().slice(0, 60)}"`);
    }
    const width = document.documentElement.scrollWidth;
    return width > limit ? [`the page is ${width}px wide`, ...found.slice(0, 5)] : found.slice(0, 5); }"""
WAIT_FOR_MATHJAX_JS = "async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise; }"
LINKS_JS = "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"


# --------------------------------------------------------------------------- the built site
def site_pages(html: Path) -> list[str]:
    """Every HTML page of the build (relative POSIX paths), but not index.html, a bare redirect
    that `test_landing_page` follows, nor the theme's and Sphinx's own assets."""
    pages = (p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    return sorted(p for p in pages if p != "index.html" and not p.startswith(("_static/", "_sources/")))


def chapter_slugs(pages: list[str]) -> list[str]:
    """The chapter slugs (``00_course_model``...) of the chapter pages ``book/NN_slug.html``."""
    return [m.group(1) for p in pages if (m := CHAPTER_PAGE.match(p))]


PAGES = site_pages(HTML) if HTML.is_dir() else []
# Without a build, one stand-in parameter lets the `site_url` fixture fail with its message
# (an empty parameter list would be a silent skip).
CHAPTERS = chapter_slugs(PAGES) or ["00_course_model"]


def repository() -> tuple[str, str]:
    """(owner/name, branch) from `repository:` in `_config.yml`, as course_ext reads them."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    url = str(config["url"]).rstrip("/").removesuffix(".git")
    return url.removeprefix("https://github.com/"), str(config.get("branch") or "main")


class _Ids(HTMLParser):
    """The ``id`` (and legacy ``name``) anchors of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


@functools.lru_cache(maxsize=None)
def page_ids(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


def broken_links(hrefs: list[str], base_url: str, root: Path) -> list[str]:
    """The hrefs into the site (absolute, as the browser resolved them) whose file, or whose
    ``#anchor`` in an HTML file, does not exist under `root`."""
    broken = []
    for href in hrefs:
        if not href.startswith(base_url):
            continue
        url, fragment = urldefrag(href)
        target = root / unquote(urlsplit(url).path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} (no such file)")
        elif fragment and target.suffix == ".html" and unquote(fragment) not in page_ids(target):
            broken.append(f"{href} (no such anchor)")
    return sorted(set(broken))


# --------------------------------------------------------------------------- serving
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        """No request log on stderr: failures are reported by the tests."""


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------- visiting a page
@dataclass
class PageReport:
    """What went wrong while a page loaded; empty lists when nothing did."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    undrawn_figures: list[str] = field(default_factory=list)
    clipped_figures: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    stderr_outputs: list[str] = field(default_factory=list)
    build_paths: list[str] = field(default_factory=list)
    repeated_progress_bars: list[str] = field(default_factory=list)
    scrolling_code: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per problem, named by its kind."""
        return [f"{name}: {item}" for name, items in vars(self).items() for item in items]


def _watch(page: Page, base_url: str, report: PageReport) -> None:
    """Record the page's console errors, uncaught exceptions and bad local requests in `report`."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            report.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def on_request_failed(request: Request) -> None:
        if request.url.startswith(base_url):
            report.failed_requests.append(f"{request.url} ({request.failure})")

    def on_response(response: Response) -> None:
        if response.url.startswith(base_url) and response.status >= 400:
            report.failed_requests.append(f"{response.url} (HTTP {response.status})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: report.console_errors.append(f"uncaught: {error}"))
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)


def _is_external(url: str, base_url: str) -> bool:
    return not url.startswith(base_url) and not url.startswith(("data:", "blob:", "about:"))


def _wait_for_figures(page: Page, timeout_ms: int) -> list[str]:
    """Wait until the page has loaded and every plotly figure has drawn its SVG; return the ids of
    those that have not when the time is up, each with the state of the page (see
    ``UNDRAWN_FIGURE_STATE_JS``). "networkidle" alone is not enough: while the parser runs
    plotly.min.js no request is open, so it can come before the figures' elements exist."""
    try:
        page.wait_for_function(ALL_FIGURES_DRAWN_JS, timeout=timeout_ms)
    except PlaywrightTimeout:
        pass
    figures = [f"{id_} ({page.evaluate(UNDRAWN_FIGURE_STATE_JS, id_)})" for id_ in page.evaluate(UNDRAWN_FIGURES_JS)]
    return figures + [f"CircuitsVis view {id_}" for id_ in page.evaluate(UNDRAWN_VIEWS_JS)]


def build_machine_paths() -> list[str]:
    """The folders of this machine that no page may show (course_ext warns about the same ones)."""
    folders = {str(ROOT), sys.prefix, sys.base_prefix, str(Path.home())}
    return sorted(folder for folder in folders if len(folder) > 1)


def paths_shown(page: Page) -> list[str]:
    """The build machine's folders that the page's text shows."""
    text = page.evaluate("() => document.body.innerText")
    return [folder for folder in build_machine_paths() if folder + "/" in text]


@contextmanager
def visit(
    browser: Browser,
    base_url: str,
    path: str,
    root: Path,
    figure_timeout_ms: int = FIGURE_TIMEOUT_MS,
    wait_until: Literal["load", "networkidle"] = "networkidle",
    viewport: dict[str, int] = VIEWPORT,
) -> Iterator[tuple[Page, PageReport]]:
    """Open `path` of the site served at `base_url` (from `root`) in a fresh context (a first-time
    visitor: no storage, no cache), wait for the network to settle (`wait_until`: "networkidle"
    also sees what scripts fetch after the load event, such as MathJax's fonts) and the figures
    to draw, and yield the page with the report of what went wrong. Requests to other hosts are
    aborted."""
    context = browser.new_context(viewport=viewport)
    report = PageReport()

    def block(route: Route) -> None:
        report.external_requests.append(route.request.url)
        route.abort("blockedbyclient")

    context.route(lambda url: _is_external(url, base_url), block)
    page = context.new_page()
    _watch(page, base_url, report)
    try:
        page.goto(base_url + path, wait_until=wait_until)
        report.undrawn_figures.extend(_wait_for_figures(page, figure_timeout_ms))
        report.clipped_figures.extend(page.evaluate(CLIPPED_FIGURES_JS))
        report.broken_links.extend(broken_links(page.evaluate(LINKS_JS), base_url, root))
        report.stderr_outputs.extend(page.evaluate(STDERR_OUTPUTS_JS))
        report.build_paths.extend(paths_shown(page))
        report.repeated_progress_bars.extend(page.evaluate(REPEATED_PROGRESS_BARS_JS))
        if viewport["width"] >= VIEWPORT["width"]:  # at a phone's width code has to scroll
            report.scrolling_code.extend(page.evaluate(SCROLLING_CODE_JS))
        yield page, report
    finally:
        context.close()


# --------------------------------------------------------------------------- fixtures
def chromium_executable() -> str:
    """The system Chromium that Playwright drives (it never downloads one for the course)."""
    named = os.environ.get(CHROMIUM_ENV)
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        pytest.fail(
            "the browser tests need Chromium, which was not found"
            + (f" at {CHROMIUM_ENV}={named}" if named else " on PATH")
            + ". On Debian: `sudo apt-get install chromium` (`bash .ci/run` installs it when missing);"
            + f" elsewhere set {CHROMIUM_ENV} to a Chromium or Chrome executable.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the test session (per pytest-xdist worker)."""
    executable = chromium_executable()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def site_url() -> Iterator[str]:
    """The base URL of `_build/html`, served on 127.0.0.1 for the session."""
    if not PAGES or not (HTML / "book" / "intro.html").is_file():
        pytest.fail(f"{HTML} is not built: run `make book` first (`make test` does).", pytrace=False)
    with serve(HTML) as url:
        yield url


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (kept by CI as test artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# --------------------------------------------------------------------------- every page
@pytest.mark.parametrize("path", PAGES or ["book/intro.html"])
def test_page_loads_offline_without_errors(browser: Browser, site_url: str, path: str) -> None:
    """Every page: no console error, failed or external request, undrawn figure or broken link;
    a chapter page also links its lab (Colab, download) and solution page (`lab_link_problems`)."""
    with visit(browser, site_url, path, HTML) as (page, report):
        problems = report.problems()
        if chapter := CHAPTER_PAGE.match(path):
            problems += lab_link_problems(page, site_url, chapter.group(1))
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


def overflow_at_phone_width(page: Page) -> list[str]:
    """What makes the page wider than a phone's screen (MathJax first typesets its equations)."""
    page.evaluate(WAIT_FOR_MATHJAX_JS)
    return page.evaluate(OVERFLOW_JS)


@pytest.mark.parametrize("path", PAGES or ["book/intro.html"])
def test_page_fits_a_phone(browser: Browser, site_url: str, path: str) -> None:
    """At 400 px, only code blocks, equations and tables scroll sideways, each in its own box."""
    with visit(browser, site_url, path, HTML, viewport=PHONE) as (page, _):
        overflow = overflow_at_phone_width(page)
    assert not overflow, f"{path} at {PHONE['width']} px:\n  " + "\n  ".join(overflow)


def test_sidebar_says_what_each_page_is(browser: Browser, site_url: str) -> None:
    """The sidebar lists "Chapter N · Topic" and, under it, "Solution N · Topic", never a "Lab N" that
    opens a solution; and a solution page hides its Colab set-up cell (the notebook keeps it)."""
    slug = CHAPTERS[-1]
    with visit(browser, site_url, f"solutions/{slug}.html", HTML) as (page, _):
        entries = page.eval_on_selector_all("nav.bd-docs-nav a", "links => links.map(a => a.textContent.trim())")
        title = page.locator("article h1").first.inner_text()
        text = page.evaluate("() => document.querySelector('article').innerText")
    number = int(slug[:2])
    assert re.fullmatch(rf"Solution {number} · \S.*", title.rstrip("#").strip()), title
    for role in ("Chapter", "Solution"):
        found = [entry for entry in entries if re.fullmatch(rf"{role} \d+ · \S.*", entry)]
        assert len(found) == len(CHAPTERS), f"{len(found)} sidebar entries '{role} N · ...' for {len(CHAPTERS)} chapters: {entries}"
    assert not [entry for entry in entries if entry.startswith("Lab ")], entries
    assert "Runs only in Google Colab" not in text, "the Colab install cell shows on the solution page"


def test_every_solution_notebook_is_a_page_and_figures_are_checked(site_url: str) -> None:
    """Each solutions/NN_slug.ipynb is a page (so the test above opens it), and some page has a
    plotly figure (so the figure check above checks something)."""
    notebooks = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    for notebook in notebooks:
        assert f"solutions/{notebook.stem}.html" in PAGES, f"{notebook.name} has no page in the build"
    figures = sum((HTML / page).read_text(encoding="utf-8").count('class="course-plotly"') for page in PAGES)
    assert figures > 0 or not notebooks, "no page has a plotly figure: the figure check checks nothing"


# --------------------------------------------------------------------------- landing page
def test_landing_page(browser: Browser, site_url: str, artifacts: Path) -> None:
    """The site's root redirects to the landing page, which shows the logo, has a favicon,
    explains the three ways to use the course and links the citation page."""
    with visit(browser, site_url, "", HTML) as (page, report):
        page.wait_for_url("**/book/intro.html")
        page.wait_for_load_state("networkidle")
        assert page.get_by_role("heading", name=re.compile("Three ways to use the course")).is_visible()
        logo_width = page.eval_on_selector("img.logo__image", "img => img.naturalWidth")
        assert logo_width > 0, "the logo did not load"
        favicon = page.eval_on_selector("link[rel~='icon']", "link => link.href")
        assert page.request.get(favicon).ok, f"favicon {favicon} does not load"
        assert page.locator("a[href$='cite_and_licence.html']").count() > 0, "no link to 'How to cite'"
        page.screenshot(path=str(artifacts / "landing.png"))
        assert not report.problems(), report.problems()


# --------------------------------------------------------------------------- chapter pages
def lab_link_problems(page: Page, site_url: str, slug: str) -> list[str]:
    """What is wrong with a chapter page's lab links: it needs one Colab badge opening this
    chapter's lab notebook, a download link to that notebook (served by the site once the lab
    exists), and a link to the solution page once that page is in the book."""
    repo, branch = repository()
    problems = []
    colab = page.eval_on_selector_all("a.course-colab-link", "links => links.map(a => a.href)")
    if colab != [f"{COLAB}/{repo}/blob/{branch}/labs/{slug}.ipynb"]:
        problems.append(f"Colab badge links {colab}, not this chapter's labs/{slug}.ipynb on {repo}@{branch}")
    downloads = page.eval_on_selector_all("a.course-lab-download", "links => links.map(a => a.href)")
    lab = ROOT / "labs" / f"{slug}.ipynb"
    expected = f"{site_url}labs/{slug}.ipynb" if lab.exists() else f"/{repo}/{branch}/labs/{slug}.ipynb"
    if len(downloads) != 1 or not downloads[0].endswith(expected):
        problems.append(f"lab download links {downloads}, expected one ending {expected}")
    elif lab.exists():
        response = page.request.get(downloads[0])
        if not response.ok or json.loads(response.body()) != json.loads(lab.read_text(encoding="utf-8")):
            problems.append(f"{downloads[0]}: HTTP {response.status}, or not labs/{slug}.ipynb")
    solutions = page.eval_on_selector_all("a.course-solution-link", "links => links.map(a => a.href)")
    solution = f"solutions/{slug}.html"
    if solutions != ([site_url + solution] if solution in PAGES else []):
        problems.append(f"solution links {solutions}; the book {'has' if solution in PAGES else 'lacks'} {solution}")
    return problems


@pytest.mark.parametrize("width", ["desktop", "phone"])
@pytest.mark.parametrize("kind", ["chapter", "solution"])
def test_screenshots(browser: Browser, site_url: str, artifacts: Path, kind: str, width: str) -> None:
    """Screenshots of a chapter page (its lab links in view) and of a solution page, at desktop and
    phone width: ``_build/test-artifacts/{chapter,solution}-{desktop,phone}.png``."""
    folder = "book" if kind == "chapter" else "solutions"
    viewport = VIEWPORT if width == "desktop" else PHONE
    with visit(browser, site_url, f"{folder}/{CHAPTERS[-2]}.html", HTML, viewport=viewport) as (page, _):
        if kind == "chapter":
            assert page.locator(".course-lab-links").is_visible()
        page.evaluate(WAIT_FOR_MATHJAX_JS)
        page.screenshot(path=str(artifacts / f"{kind}-{width}.png"))


# --------------------------------------------------------------------------- search
@pytest.mark.parametrize(("query", "expected"), sorted(SEARCHES.items()))
def test_search_finds_the_chapter(browser: Browser, site_url: str, query: str, expected: str) -> None:
    """Type a query into the search box of the landing page: the results list the chapter."""
    with visit(browser, site_url, "book/intro.html", HTML) as (page, report):
        page.locator("button.search-button__button:visible").first.click()
        box = page.locator("#pst-search-dialog input[name='q']")
        box.fill(query)
        box.press("Enter")
        page.wait_for_url("**/search.html?q=*")
        page.locator("ul.search li a").first.wait_for()
        results = page.eval_on_selector_all("ul.search li a", "links => links.map(a => a.href)")
        assert f"{site_url}{expected}" in results, results
        assert not report.problems(), report.problems()


# --------------------------------------------------------------------------- the checks can fail
# Each page of a tiny site with one fault, and the kinds of problem its report must list.
BROKEN_SITE = {
    "clean.html": "<p>fine</p>",
    "console.html": "<script>console.error('boom')</script>",
    "exception.html": "<script>undefinedFunction()</script>",
    "figure.html": '<div class="course-plotly" id="plotly-broken"></div>',
    "missing.html": '<script src="missing.js"></script>',
    "external.html": '<img src="https://example.com/pixel.png" alt="">',
    "links.html": '<a href="nowhere.html">x</a> <a href="clean.html#no-such-anchor">y</a>',
    "stderr.html": '<div class="output stderr"><pre>UserWarning: something</pre></div>',
    "path.html": f"<p>File {ROOT}/utils/models.py, line 3</p>",
    "bars.html": '<div class="output stream"><pre>train:  10%|#    | 1/10\ntrain: 100%|#####| 10/10</pre></div>',
    "two_bars.html": '<div class="output stream"><pre>train: 100%|#####| 10/10\ntrain: 100%|#####| 4/4</pre></div>',
    "clipped.html": '<div class="course-plotly" id="plotly-wide" style="width:200px">'
                    '<svg class="main-svg" width="500" height="10"></svg></div>',
    "view.html": '<div id="circuits-vis-undrawn"><script>/* the bundle never ran */</script></div>',
    "code.html": f'<div class="cell_input"><pre style="overflow-x:auto">{"x = 1; " * 40}</pre></div>',
}
EXPECTED_PROBLEMS = {
    "clean.html": set(),
    "console.html": {"console_errors"},
    "exception.html": {"console_errors"},
    "figure.html": {"undrawn_figures"},
    "missing.html": {"failed_requests", "console_errors"},  # Chromium also logs the 404
    "external.html": {"external_requests", "console_errors"},  # and the blocked request
    "links.html": {"broken_links"},
    "stderr.html": {"stderr_outputs"},
    "path.html": {"build_paths"},
    "bars.html": {"repeated_progress_bars"},
    "two_bars.html": set(),
    "clipped.html": {"clipped_figures"},
    "view.html": {"undrawn_figures"},
    "code.html": {"scrolling_code"},
}
# At phone width: a paragraph wider than the screen is caught; a code block as wide, scrolling in its own box, is not.
WIDE_PAGE = ('<div class="bd-article"><p style="width:900px">a wide paragraph</p>'
             '<pre style="overflow-x:auto;max-width:100%"><span style="display:inline-block;width:900px">code</span></pre></div>')


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A tiny site whose pages each have one of the faults the checks above look for."""
    root = tmp_path_factory.mktemp("broken_site")
    for name, body in {**BROKEN_SITE, "wide.html": WIDE_PAGE}.items():
        (root / name).write_text(f"<!doctype html><html><body>{body}</body></html>", encoding="utf-8")
    with serve(root) as url:
        yield url, root


@pytest.mark.parametrize("name", sorted(EXPECTED_PROBLEMS))
def test_checks_catch_a_broken_page(browser: Browser, broken_site: tuple[str, Path], name: str) -> None:
    url, root = broken_site
    with visit(browser, url, name, root, figure_timeout_ms=500, wait_until="load") as (_, report):
        found = {kind for kind, items in vars(report).items() if items}
    assert found == EXPECTED_PROBLEMS[name], report


def test_phone_check_catches_a_wide_page(browser: Browser, broken_site: tuple[str, Path]) -> None:
    url, root = broken_site
    with visit(browser, url, "wide.html", root, figure_timeout_ms=500, wait_until="load", viewport=PHONE) as (page, _):
        overflow = overflow_at_phone_width(page)
    assert overflow[0].startswith("the page is") and len(overflow) == 2, overflow
    assert "a wide paragraph" in overflow[1], overflow
