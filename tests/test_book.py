"""Checks on the book: the table of contents, and the site that `make book` builds.

`make test` runs `make book` first, so `_build/html` exists; run alone without a build, the site
checks fail and say to run `make book`. tests/test_site.py opens the site in a browser.
"""

from __future__ import annotations

import html as html_text
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The chapters of COURSE.md ("Chapters" table), by number and slug.
CHAPTERS = {
    0: "00_course_model",
    1: "01_prompting",
    2: "02_lora",
    3: "03_caching_hooks",
    4: "04_logit_lens",
    5: "05_steering_caa",
    6: "06_sparse_autoencoders",
    7: "07_circuits",
}


def course_md() -> Path | None:
    """COURSE.md lives in shared/, which sits beside the checkout (or inside it)."""
    for candidate in (ROOT / "shared" / "COURSE.md", ROOT.parent / "shared" / "COURSE.md"):
        if candidate.exists():
            return candidate
    return None


def course_chapter_numbers(text: str) -> list[int]:
    section = text.split("## Chapters", 1)[1].split("\n## ", 1)[0]
    return [int(m.group(1)) for m in re.finditer(r"^\|\s*(\d+)\s*\|", section, flags=re.M)]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


# --------------------------------------------------------------------------- toc (no build)
def test_chapter_list_matches_course_md():
    path = course_md()
    if path is None:
        pytest.skip("shared/COURSE.md not found beside the checkout")
    assert course_chapter_numbers(path.read_text()) == sorted(CHAPTERS)


def test_toc_lists_every_chapter_page():
    files = toc_files()
    for number, slug in CHAPTERS.items():
        assert f"book/{slug}" in files, f"_toc.yml has no page for chapter {number} (book/{slug}.md)"


def test_toc_lists_only_existing_files_and_every_solution():
    files = toc_files()
    for entry in files:
        matches = [p for p in (ROOT / f"{entry}.md", ROOT / f"{entry}.ipynb", ROOT / entry) if p.is_file()]
        assert matches, f"_toc.yml lists {entry}, which does not exist (the -W build would fail)"
    for notebook in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        assert f"solutions/{notebook.stem}" in files, f"{notebook.name} is missing from _toc.yml"



def page_title(path: Path) -> str:
    """The first ``# `` line of a chapter page or a notebook (its title on the site and in the sidebar)."""
    if path.suffix == ".ipynb":
        from utils.notebooks import cells as C

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return C.source(cells[C.title_cell(cells)]).partition("\n")[0]
    return next(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# "))


@pytest.mark.parametrize(("number", "slug"), sorted(CHAPTERS.items()))
def test_each_page_says_what_it_is(number, slug):
    """The sidebar tells the chapter page, the executed solution and the lab apart by their titles:
    'Chapter N · Topic', 'Solution N · Topic', 'Lab N · Topic', one topic for all three."""
    from utils.notebooks.cells import TITLE

    page = TITLE.match(page_title(ROOT / "book" / f"{slug}.md"))
    assert page and page["role"] == "Chapter" and int(page["number"]) == number, page_title(ROOT / "book" / f"{slug}.md")
    for folder, role in (("solutions", "Solution"), ("labs", "Lab")):
        assert page_title(ROOT / folder / f"{slug}.ipynb") == f"# {role} {number} · {page['topic']}", folder


# --------------------------------------------------------------------------- time estimates (no build)
DURATION = r"(?:\d+ h(?: \d+ min)?|\d+ min)"
PAGE_ESTIMATE = re.compile(
    rf"^\*\*Estimated time:\*\* (?P<total>{DURATION}): (?P<reading>{DURATION}) reading this page, then the lab: "
    rf"(?P<exercises>{DURATION}) of exercises and (?P<rest>{DURATION}) of reading and running the rest"
    rf"(?:; (?P<bonus>{DURATION}) more for the bonus exercises)?\.$", re.M)
LAB_ESTIMATE = re.compile(
    rf"About (?P<lab>{DURATION}): (?P<exercises>{DURATION}) of exercises and (?P<rest>{DURATION}) of reading and "
    rf"running the rest(?:; (?P<bonus>{DURATION}) more for the bonus exercises)?\.")


def minutes(duration: str | None) -> int:
    """``"2 h 40 min"`` -> 160; None (no bonus exercises) -> 0."""
    if duration is None:
        return 0
    hours, mins = re.search(r"(\d+) h", duration), re.search(r"(\d+) min", duration)
    return 60 * int(hours.group(1) if hours else 0) + int(mins.group(1) if mins else 0)


def exercise_minutes(notebook: Path) -> tuple[int, int]:
    """The minutes of a solution notebook's exercises (``About N minutes``): the core ones and the bonus ones."""
    core = bonus = 0
    for cell in json.loads(notebook.read_text())["cells"]:
        text = "".join(cell["source"])
        heading = re.search(r"^#+ Exercise \d+\.\d+.*$", text, re.M)
        if cell["cell_type"] == "markdown" and heading:
            found = re.search(r"About (\d+) minutes", text)
            assert found, f"{notebook.name}: '{heading.group(0)}' states no time ('About N minutes')"
            if "(bonus)" in heading.group(0):
                bonus += int(found.group(1))
            else:
                core += int(found.group(1))
    return core, bonus


@pytest.mark.parametrize("slug", CHAPTERS.values())
def test_time_estimates_add_up_from_the_exercises(slug):
    """The page's time is its reading, the sum of the lab's exercises and the rest of the lab; the lab's
    introduction and the book's table of chapters say the same."""
    page = PAGE_ESTIMATE.search((ROOT / "book" / f"{slug}.md").read_text())
    assert page, f"book/{slug}.md: no '**Estimated time:** ...' line in the course's form"
    core, bonus = exercise_minutes(ROOT / "solutions" / f"{slug}.ipynb")
    assert minutes(page["exercises"]) == core, f"book/{slug}.md: the exercises add up to {core} min"
    assert minutes(page["bonus"]) == bonus, f"book/{slug}.md: the bonus exercises add up to {bonus} min"
    assert minutes(page["total"]) == minutes(page["reading"]) + core + minutes(page["rest"])
    introduction = "".join(json.loads((ROOT / "solutions" / f"{slug}.ipynb").read_text())["cells"][1]["source"])
    lab = LAB_ESTIMATE.search(introduction)
    assert lab, f"solutions/{slug}.ipynb: the introduction states no 'About ...: ... of exercises and ...' time"
    assert (lab["exercises"], lab["rest"], lab["bonus"]) == (page["exercises"], page["rest"], page["bonus"])
    assert minutes(lab["lab"]) == core + minutes(lab["rest"])
    row = re.search(rf"^\| \d+ \| {{doc}}`{slug}` \| (?P<total>[^|]+) \|$", (ROOT / "book" / "intro.md").read_text(),
                    re.M)
    assert row and row["total"] == page["total"], f"book/intro.md's table gives chapter {slug} another time"


# --------------------------------------------------------------------------- built site
class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "link" and attrs.get("href") and {"stylesheet", "preload", "modulepreload"} & set(
            (attrs.get("rel") or "").split()
        ):
            self.styles.append(attrs["href"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site() -> Path:
    if not (HTML / "index.html").exists():
        pytest.fail("_build/html is not built: run `make book` first (`make test` does)", pytrace=False)
    return HTML


def test_index_and_every_chapter_page_exist(site):
    assert (site / "index.html").is_file()
    assert (site / "book" / "intro.html").is_file()
    for slug in CHAPTERS.values():
        assert (site / "book" / f"{slug}.html").is_file(), f"no page for {slug}"


@pytest.mark.parametrize("slug", list(CHAPTERS.values()))
def test_chapter_page_links_its_lab_in_colab(site, slug):
    links = refs(site / "book" / f"{slug}.html").links
    colab = [link for link in links if link.startswith("https://colab.research.google.com/github/")]
    assert colab, f"{slug}: no Open-in-Colab link"
    assert all(link.endswith(f"/labs/{slug}.ipynb") for link in colab), colab
    assert any(link.endswith(f"labs/{slug}.ipynb") and "colab" not in link for link in links), (
        f"{slug}: no download link for the lab notebook"
    )


def test_no_page_loads_scripts_or_styles_from_the_network(site):
    offenders = []
    for page in sorted(site.rglob("*.html")):
        found = refs(page)
        for url in found.scripts + found.styles:
            if re.match(r"^(https?:)?//", url):
                offenders.append(f"{page.relative_to(site)}: {url}")
    assert not offenders, "pages load remote JS/CSS (the site must work offline):\n" + "\n".join(offenders)


def test_plotly_and_mathjax_are_served_locally(site):
    plotly_js = site / "_static" / "plotly.min.js"
    assert plotly_js.is_file() and plotly_js.stat().st_size > 1_000_000
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


# --------------------------------------------------------------------------- fixture books
def fixture_book(name: str, tmp_path: Path) -> Path:
    """A copy of the one-page book tests/fixtures/<name>, with the course extension's path filled in."""
    book = tmp_path / "book"
    shutil.copytree(FIXTURES / name, book)
    config = book / "_config.yml"
    config.write_text(config.read_text().replace("@EXT_DIR@", str(ROOT / "book" / "_ext")))
    return book


def build_book(book: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`jupyter-book build` of `book` with the course's flags (warnings are errors)."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    build = [str(jupyter_book), "build", str(book), "--builder", "html", "-W", "-n", "--keep-going"]
    return subprocess.run(build, capture_output=True, text=True, env=env, timeout=300)


# --------------------------------------------------------------------------- plotly proof
@pytest.mark.slow
def test_plotly_figure_is_interactive_offline(tmp_path):
    """Build a one-page book whose notebook draws a plotly figure, with the course extension:
    the figure must be rendered (not dropped as an unknown mime type) and load only local JS."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PLOTLY_RENDERER", None)  # the kernel's own default renderer, as in a real build
    book = fixture_book("plotly_book", tmp_path)
    result = build_book(book, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    page = book / "_build" / "html" / "figure.html"
    html = page.read_text(encoding="utf-8")
    assert 'class="course-plotly"' in html and "Plotly.newPlot" in html and "fixture-trace" in html
    scripts = refs(page).scripts
    assert any(src.split("?")[0] == "_static/plotly.min.js" for src in scripts), scripts
    assert not [src for src in scripts if re.match(r"^(https?:)?//", src)], scripts
    assert (book / "_build" / "html" / "_static" / "plotly.min.js").is_file()
    assert "cdn.plot.ly" not in html and "require.js" not in html


#: Sphinx's smartquotes turn the quotes of quoted text into typographic ones.
TYPOGRAPHIC_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def test_every_quoted_result_shows_its_recorded_text(site):
    """A `{result}` role on a chapter page renders as the text its notebook recorded (utils.results)."""
    from utils.results import lookup

    for page in sorted((ROOT / "book").glob("*.md")):
        text = page.read_text()
        references = re.findall(r"\{result\}`([^`]+)`", text)
        tables = re.findall(r"```\{result-table\} (\S+)", text)
        if not references and not tables:
            continue
        html = (site / "book" / f"{page.stem}.html").read_text(encoding="utf-8")
        shown = [html_text.unescape(text).translate(TYPOGRAPHIC_QUOTES)
                 for text in re.findall(r'<span class="course-result">([^<]*)</span>', html)]
        assert shown == [lookup(reference) for reference in references], page.name
        rendered = re.findall(r'<div class="course-result-table[^"]*">\s*(?:<div[^>]*>\s*)?<table', html)
        assert len(rendered) == len(tables), f"{page.name}: {len(rendered)} of {len(tables)} result tables rendered"


@pytest.mark.slow
def test_result_role_and_table_show_the_recorded_text(tmp_path, monkeypatch):
    """A one-page book quoting a recorded number and a recorded table: both appear as recorded, and a
    result nobody recorded fails the build (-W)."""
    from utils.results import Results

    book, records = fixture_book("results_book", tmp_path), tmp_path / "results"
    env = dict(os.environ, COURSE_RESULTS="write", COURSE_RESULTS_DIR=str(records))
    results = Results("04_logit_lens", directory=records)
    monkeypatch.setenv("COURSE_RESULTS", "write")
    results.record("kl_layer_0", 16.012, digits=2)
    results.record_table("kl_by_layer", [{"layer": 0, "KL": 16.012}, {"layer": 1, "KL": 3.861}], digits=2)
    result = build_book(book, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = (book / "_build" / "html" / "quoted.html").read_text(encoding="utf-8")
    assert '<span class="course-result">16.01</span>' in html
    table = html[html.index('class="course-result-table'):]
    table = table[:table.index("</table>")]
    assert re.findall(r"<td[^>]*>(?:<p>)?([^<]+)(?:</p>)?</td>", table) == ["0", "16.01", "1", "3.86"]
    (book / "quoted.md").write_text((book / "quoted.md").read_text() + "\nAnd {result}`04_logit_lens/missing`.\n")
    result = build_book(book, env)
    assert result.returncode != 0 and "04_logit_lens/missing" in result.stdout + result.stderr


# --------------------------------------------------------------------------- printed output
def _course_ext():
    """book/_ext/course_ext.py, imported as the book build imports it."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import course_ext
    finally:
        sys.path.pop(0)
    return course_ext


@pytest.mark.parametrize(("printed", "shown"), [
    ("plain\ntext\n", "plain\ntext\n"),
    ("\r  0%|          | 0/4\r 50%|#####     | 2/4\r100%|##########| 4/4\n", "100%|##########| 4/4\n"),
    ("a longer line\rshort\n", "shortger line\n"),  # a terminal overwrites, it does not erase
    ("before\n\r 50%|#####| 2/4\r               \r\nafter\n", "before\nafter\n"),  # a bar that cleared itself
    ("abc\b\bX\n", "aXc\n"),  # a backspace moves left, what follows overwrites
    # tqdm's nested bars: the inner one (leave=False) draws on the next line, moves up, then clears itself
    ("\router:   0%| 0/2\n\rinner:  50%| 1/2\x1b[A\n\r                \x1b[A\router: 100%| 2/2\n", "outer: 100%| 2/2\n"),
    ("\x1b[31mred\x1b[0m text\n", "\x1b[31mred\x1b[0m text\n"),  # colours stay for the ANSI lexer
])
def test_terminal_text_folds_carriage_returns_as_a_terminal(printed, shown):
    assert _course_ext().terminal_text(printed) == shown


def test_merge_streams_merges_runs_of_one_stream_only():
    stream = lambda name, text: {"output_type": "stream", "name": name, "text": text}  # noqa: E731
    figure = {"output_type": "display_data", "data": {"text/plain": "figure"}}
    outputs = [stream("stdout", "\r 50%"), stream("stdout", "\r100%\n"), figure, stream("stdout", "after\n"),
               stream("stderr", "warning\n"), stream("stdout", "\r   \r")]
    merged = _course_ext().merge_streams(outputs)
    assert merged == [stream("stdout", "100%\n"), figure, stream("stdout", "after\n"), stream("stderr", "warning\n")]
    assert outputs[0]["text"] == "\r 50%", "the notebook's own outputs were changed"


def test_the_book_makes_stderr_a_warning():
    """`make book` runs with -W, so a stderr output fails it (the fixture below builds with the same setting)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    fixture = yaml.safe_load((FIXTURES / "streams_book" / "_config.yml").read_text())
    assert config["execute"]["stderr_output"] == fixture["execute"]["stderr_output"] == "warn"


@pytest.mark.slow
def test_executed_pages_show_no_stderr_nor_build_paths(tmp_path):
    """A progress bar of utils.progress shows its last state only, on stdout; a page that writes to
    stderr, or prints a path of the build machine, fails the build."""
    from utils.notebooks.execute import kernel_env

    book = fixture_book("streams_book", tmp_path)
    result = build_book(book, kernel_env())  # the variables `make book` exports
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = html_text.unescape((book / "_build" / "html" / "printed.html").read_text(encoding="utf-8"))
    shown = html.partition('class="cell_output')[2]  # what the cell printed, not its code
    assert shown.count("fixture bar") == 1 and "fixture bar: 100%" in shown, shown[:1000]
    assert "cleared bar" not in shown and "second" in shown and "first" not in shown
    assert 'class="output stderr' not in html and "IProgress" not in html

    page = book / "printed.md"
    page.write_text(page.read_text() + "\n```{code-cell} python3\nimport sys\n\nprint('a warning', file=sys.stderr)"
                    "\nprint(sys.prefix + '/lib')\n```\n")
    result = build_book(book, kernel_env())
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "stderr was found in the cell outputs" in log and "path of the build machine" in log, log[-4000:]
