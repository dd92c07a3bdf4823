"""Sphinx extension for the course book (loaded through `_config.yml`: sphinx.local_extensions).

It does seven things, each configured once here rather than in every notebook:

1. ``colab-lab`` directive: an "Open in Colab" badge for a chapter's *exercise* notebook
   ``labs/<slug>.ipynb`` (JB's own Colab button would open the page's notebook, which is the
   solution), a link to download that lab notebook, and, once ``solutions/<slug>`` is a page
   of the book, a link to that executed solution page (readers open it when they want to)::

       ```{colab-lab} 00_course_model
       ```

   URLs are built from ``repository.url`` and ``repository.branch`` in ``_config.yml``.
   When ``labs/<slug>.ipynb`` exists at build time it is also copied into the site, and the
   download link points at that copy (so it works offline).

2. Plotly figures: notebooks executed in a Jupyter kernel emit plotly's own mime type
   ``application/vnd.plotly.v1+json`` (the default renderer of plotly >= 6 there), which
   myst-nb cannot render. We render it to a ``<div>`` plus a ``Plotly.newPlot`` call, and
   prefer it over any ``text/html`` fallback (which would pull MathJax from a CDN).

3. ``plotly.min.js`` is copied from the installed ``plotly`` package into ``_static`` and
   loaded (as a plain global script, no require.js needed) only on pages that have a figure.
   Nothing is fetched from a CDN, so the site works offline.

4. ``result`` role: ``{result}`04_logit_lens/kl_logit_lens_layer_0``` shows the text that the
   chapter's solution notebook recorded with :class:`utils.results.Results` (``book/results/``),
   so the prose quotes what the code computed; ``{result-table}`` does the same for a recorded
   markdown table. An unknown key is a warning (an error under -W).

5. Each page loads an inline script once: Sphinx 7.4 registers an inline script added after the
   builder starts (sphinx-thebe's ``const THEBE_JS_URL``, sphinx-togglebutton's selector) twice,
   and the second ``const`` is a JavaScript error in the reader's console.

6. CircuitsVis views (``utils.attention.attention_view``) carry their 1.3 MB JavaScript bundle
   inline, so that they draw in an offline notebook; on the site the bundle is copied once into
   ``_static`` and loaded only by the pages that show a view (as plotly.min.js is).

7. Printed text as a notebook shows it: consecutive stream outputs are merged and their carriage
   returns folded as a terminal folds them, so a progress bar shows its last state only (myst-nb's
   own merging ends every chunk with a newline: one line per redraw). ``_config.yml`` makes any
   stderr output a warning (an error under -W), and a page that shows a path of the build machine
   (the checkout, the virtual environment, the home folder) is a warning too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import posixpath
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

LOGGER = logging.getLogger(__name__)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "plotly.min.js"
PLOTLY_CLASS = "course-plotly"
COLAB_ROOT = "https://colab.research.google.com/github"
SLUG_RE = re.compile(r"^\d\d_[a-z0-9_]+$")
SOLUTION_KEY = "doc:"  # marks a solution page (not a file) among the targets `colab-lab` noted


# --------------------------------------------------------------------------- repository
def repository(config: Any) -> tuple[str, str, str]:
    """Return (owner/name, branch, https url) from `repository:` in `_config.yml`."""
    options = config.html_theme_options or {}
    url = str(options.get("repository_url", "")).rstrip("/")
    branch = str(options.get("repository_branch", "main")) or "main"
    match = re.match(r"^https://github\.com/([^/]+/[^/]+?)(?:\.git)?$", url)
    if not match:
        raise ValueError(
            f"course_ext: repository.url in _config.yml must be https://github.com/OWNER/NAME, got {url!r}"
        )
    return match.group(1), branch, url


def lab_urls(config: Any, slug: str) -> dict[str, str]:
    """The Colab, GitHub and raw-download URLs of `labs/<slug>.ipynb`."""
    repo, branch, url = repository(config)
    path = f"labs/{slug}.ipynb"
    return {
        "colab": f"{COLAB_ROOT}/{repo}/blob/{branch}/{path}",
        "github": f"{url}/blob/{branch}/{path}",
        "raw": f"https://raw.githubusercontent.com/{repo}/{branch}/{path}",
        "path": path,
    }


class ColabLab(SphinxDirective):
    """```{colab-lab} NN_slug``` : badge + download link for the chapter's lab notebook."""

    required_arguments = 1
    optional_arguments = 0
    has_content = False
    option_spec = {"class": directives.class_option}

    def run(self) -> list[nodes.Node]:
        slug = self.arguments[0].strip()
        if slug.endswith(".ipynb"):
            slug = slug[: -len(".ipynb")]
        if not SLUG_RE.match(slug):
            raise self.error(f"colab-lab: expected a chapter slug like 00_course_model, got {slug!r}")
        urls = lab_urls(self.config, slug)
        srcdir = Path(self.env.srcdir)
        lab_file = srcdir / urls["path"]
        labs_seen = getattr(self.env, "course_labs", None)
        if labs_seen is None:
            labs_seen = self.env.course_labs = {}
        labs_seen.setdefault(self.env.docname, {})[str(lab_file)] = lab_file.exists()
        if lab_file.exists():
            self.env.note_dependency(str(lab_file))
        solution = f"solutions/{slug}"
        solution_found = solution in self.env.found_docs
        labs_seen[self.env.docname][SOLUTION_KEY + solution] = solution_found
        here = posixpath.dirname(self.env.docname)
        to_root = posixpath.relpath(".", here) if here else "."
        badge = posixpath.join(to_root, "_static", "colab-badge.svg")
        if lab_file.exists():
            download = posixpath.join(to_root, urls["path"])
            download_attr = f' download="{slug}.ipynb"'
        else:
            download, download_attr = urls["raw"], ""
        classes = " ".join(["course-lab-links", *self.options.get("class", [])])
        html = (
            f'<div class="{classes}">'
            f'<a class="course-colab-link" href="{urls["colab"]}" target="_blank" rel="noopener">'
            f'<img src="{badge}" alt="Open the lab in Colab" height="20"></a> '
            f'<a class="course-lab-download" href="{download}"{download_attr}>'
            f"Download the lab notebook <code>{urls['path']}</code></a>"
        )
        if solution_found:
            href = posixpath.join(to_root, solution + (self.config.html_file_suffix or ".html"))
            html += f' · <a class="course-solution-link" href="{href}">Solution (executed notebook)</a>'
        return [nodes.raw("", html + "</div>", format="html")]


def _link_target_exists(env: Any, key: str) -> bool:
    """Whether a target the `colab-lab` directive linked (a lab file, or a solution page) exists now."""
    if key.startswith(SOLUTION_KEY):
        return key[len(SOLUTION_KEY):] in env.found_docs
    return Path(key).exists()


def labs_outdated(app: Sphinx, env: Any, added: set, changed: set, removed: set) -> list[str]:
    """Re-render a page whose lab notebook or solution page appeared or disappeared since it was read."""
    seen = getattr(env, "course_labs", {})
    return [
        docname
        for docname, targets in seen.items()
        if any(_link_target_exists(env, key) != existed for key, existed in targets.items())
    ]


def labs_purge(app: Sphinx, env: Any, docname: str) -> None:
    getattr(env, "course_labs", {}).pop(docname, None)


def labs_merge(app: Sphinx, env: Any, docnames: set, other: Any) -> None:
    if not hasattr(env, "course_labs"):
        env.course_labs = {}
    env.course_labs.update({d: v for d, v in getattr(other, "course_labs", {}).items() if d in docnames})


def copy_labs(app: Sphinx, exception: Exception | None) -> None:
    """Serve labs/*.ipynb from the site, so the download links work offline."""
    if exception is not None or app.builder.format != "html":
        return
    labs = Path(app.srcdir) / "labs"
    if labs.is_dir():
        target = Path(app.outdir) / "labs"
        for notebook in sorted(labs.glob("*.ipynb")):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(notebook, target / notebook.name)


# --------------------------------------------------------------------------- plotly
def plotly_js_path() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.exists():
        raise FileNotFoundError(f"course_ext: {path} missing; reinstall plotly")
    return path


def plotly_html(figure: dict[str, Any]) -> str:
    """HTML for one plotly figure given as plotly's JSON mime bundle."""
    payload = json.dumps(figure, sort_keys=True, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never end the <script> early
    div_id = "plotly-" + hashlib.sha1(payload.encode()).hexdigest()[:12]
    height = (figure.get("layout") or {}).get("height") or 450
    return (
        f'<div class="{PLOTLY_CLASS}" id="{div_id}" style="width:100%;height:{int(height)}px"></div>\n'
        '<script type="text/javascript">(function () {\n'
        f"  var fig = {payload};\n"
        "  function draw() {\n"
        f'    var el = document.getElementById("{div_id}");\n'
        "    if (!el || !window.Plotly) { return; }\n"
        "    var config = Object.assign({responsive: true, displaylogo: false}, fig.config || {});\n"
        "    window.Plotly.newPlot(el, fig.data || [], fig.layout || {}, config);\n"
        "  }\n"
        '  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); }\n'
        "  else { draw(); }\n"
        "})();</script>\n"
    )


def _patch_myst_nb() -> None:
    """Teach myst-nb's element renderer the plotly mime type (done once per process)."""
    from myst_nb.core import render
    from myst_nb.core.render import NbElementRenderer

    if getattr(NbElementRenderer, "_course_plotly", False):
        return
    block, inline = NbElementRenderer.render_mime_type, NbElementRenderer.render_mime_type_inline

    def render_mime_type(self, data):  # type: ignore[no-untyped-def]
        if data.mime_type == PLOTLY_MIME and isinstance(data.content, dict):
            return [nodes.raw("", plotly_html(data.content), format="html", classes=["output", "text_html"])]
        if data.mime_type == "text/html" and isinstance(data.content, str) and CIRCUITSVIS_RENDER in data.content:
            data = dataclasses.replace(data, content=without_circuitsvis_bundle(data.content))
        return block(self, data)

    def render_mime_type_inline(self, data):  # type: ignore[no-untyped-def]
        if data.mime_type == PLOTLY_MIME and isinstance(data.content, dict):
            return [nodes.raw("", plotly_html(data.content), format="html", classes=["output", "text_html"])]
        return inline(self, data)

    NbElementRenderer.render_mime_type = render_mime_type
    NbElementRenderer.render_mime_type_inline = render_mime_type_inline
    NbElementRenderer._course_plotly = True
    render.coalesce_streams = merge_streams  # what `nb_merge_streams` calls (point 7 above)


def prefer_plotly_mime(app: Sphinx, config: Any) -> None:
    overrides = list(getattr(config, "nb_mime_priority_overrides", None) or [])
    # lower number = preferred; text/html is 30 in myst-nb's html list
    overrides.append(("html", PLOTLY_MIME, 5))
    config.nb_mime_priority_overrides = overrides


def copy_into_static(app: Sphinx, source: Path, name: str) -> None:
    """Put `source` into the site's _static as `name`, unless a copy of the same size is there."""
    target = Path(app.outdir) / "_static" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)


def copy_plotly_js(app: Sphinx) -> None:
    """Put plotly.min.js into _static before any page is written."""
    if app.builder.format == "html":
        copy_into_static(app, plotly_js_path(), PLOTLY_JS)


def copy_plotly_js_again(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        copy_plotly_js(app)  # in case a clean of _static happened after builder-inited


# --------------------------------------------------------------------------- CircuitsVis
CIRCUITSVIS_JS = "circuitsvis.js"
CIRCUITSVIS_RENDER = "CircuitsVis.render("  # what every view's own script calls


def circuitsvis_js_path() -> Path | None:
    """The bundle of the installed circuitsvis package (None when it is not installed)."""
    try:
        import circuitsvis
    except ImportError:
        return None
    return Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


@functools.lru_cache(maxsize=1)
def circuitsvis_inline_bundle() -> str:
    """The bundle as circuitsvis inlines it in a view (``render_local``: closing script tags removed)."""
    path = circuitsvis_js_path()
    return "" if path is None else path.read_text(encoding="utf-8").replace("</script>", "")


def without_circuitsvis_bundle(html: str) -> str:
    """A view's HTML without its inlined bundle: the page loads ``_static/circuitsvis.js`` instead."""
    bundle = circuitsvis_inline_bundle()
    if not bundle or bundle not in html:
        raise ValueError("course_ext: a CircuitsVis view without the installed circuitsvis's bundle inline; "
                         "make it with utils.attention.attention_view (and the circuitsvis of requirements.txt)")
    return html.replace(bundle, "")


def copy_circuitsvis_js(app: Sphinx, exception: Exception | None = None) -> None:
    """Put the CircuitsVis bundle into _static (before the pages are written, and again at the end)."""
    source = circuitsvis_js_path()
    if exception is None and app.builder.format == "html" and source is not None:
        copy_into_static(app, source, CIRCUITSVIS_JS)


#: The scripts in _static that a page loads only when its body has something they draw.
SCRIPTS_WHERE_NEEDED = {PLOTLY_CLASS: PLOTLY_JS, CIRCUITSVIS_RENDER: CIRCUITSVIS_JS}


def load_scripts_where_needed(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    body = context.get("body") or ""
    for marker, script in SCRIPTS_WHERE_NEEDED.items():
        if marker in body:
            app.add_js_file(script, priority=400)


# --------------------------------------------------------------------------- streams
#: What moves a terminal's cursor (tqdm redraws with them): newline, carriage return, backspace, and
#: the ANSI "cursor up" of nested bars; anything else is text (other ANSI codes are kept as text).
TERMINAL_TOKENS = re.compile(r"\n|\r|\x08|\x1b\[A|[^\n\r\x08\x1b]+|\x1b")


def terminal_text(text: str) -> str:
    """What a terminal shows for printed `text`: a carriage return moves the cursor back to the start
    of the line, a backspace one column left, an ANSI cursor-up (``ESC [A``) one line up, and what is
    written next overwrites what was there (how tqdm redraws its bars, nested ones too). A line that
    was rewritten and ends up blank (a bar that cleared itself, ``leave=False``) is dropped."""
    screen, rewritten = [""], set()
    row = column = 0
    for token in TERMINAL_TOKENS.findall(text):
        if token == "\n":
            row, column = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif token == "\r":
            column = 0
            rewritten.add(row)
        elif token == "\x08":
            column = max(column - 1, 0)
            rewritten.add(row)
        elif token == "\x1b[A":
            row = max(row - 1, 0)
            rewritten.add(row)
        else:
            line = screen[row].ljust(column)
            screen[row] = line[:column] + token + line[column + len(token):]
            column += len(token)
    shown = [line.rstrip() if index in rewritten else line for index, line in enumerate(screen)]
    kept = "\n".join(line for index, line in enumerate(shown) if line.strip() or index not in rewritten)
    return kept + "\n" if text.endswith("\n") and not kept.endswith("\n") else kept


def merge_streams(outputs: list[Any]) -> list[Any]:
    """A code cell's outputs with each run of consecutive stream outputs of one name (stdout or
    stderr) merged into one, its text as a terminal shows it (:func:`terminal_text`); a stream
    left empty is dropped. Other outputs keep their place. The given outputs are not changed."""
    merged: list[Any] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if output.get("output_type") != "stream":
            merged.append(output)
        elif previous is not None and previous.get("output_type") == "stream" and previous["name"] == output["name"]:
            previous["text"] += output["text"]
        else:
            merged.append(copy.deepcopy(output))
    for output in merged:
        if output.get("output_type") == "stream":
            output["text"] = terminal_text(output["text"])
    return [output for output in merged if output.get("output_type") != "stream" or output["text"].strip()]


def build_machine_paths(srcdir: str) -> list[str]:
    """The folders of the machine that builds the book, which no page may show: the checkout, the
    Python environment and the home folder."""
    folders = {str(Path(srcdir).resolve()), sys.prefix, sys.base_prefix, str(Path.home())}
    return sorted(folder for folder in folders if len(folder) > 1)


def warn_about_build_paths(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Warn (an error under -W) when a page's body shows a path of the build machine: a library's
    warning, a traceback or a printed file name. Fix it at the source (see utils.progress)."""
    body = context.get("body") or ""
    for folder in build_machine_paths(app.srcdir):
        if folder + "/" in body:
            LOGGER.warning("page shows a path of the build machine, %s (a warning or a printed path in an "
                           "output? fix it at its source)", folder, location=pagename)


# --------------------------------------------------------------------------- scripts
def _script_key(script: Any) -> tuple[str, int, tuple[tuple[str, str], ...]]:
    """What makes two of a page's scripts the same one (a ``None`` and an ``""`` filename alike)."""
    attributes = getattr(script, "attributes", {}) or {}
    return (
        getattr(script, "filename", None) or "",
        int(getattr(script, "priority", 500)),
        tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
    )


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Drop the second copy of any script of the page (see point 4 of the module docstring)."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple[str, int, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: it is the builder's list, restored by Sphinx after the page


# --------------------------------------------------------------------------- setup
# --------------------------------------------------------------------------- results
class ResultRole(SphinxRole):
    """``{result}`<chapter>/<key>```: the recorded text of a computed number (utils.results)."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        from utils.results import RESULTS_DIR, lookup

        chapter = self.text.partition("/")[0]
        self.env.note_dependency(str(RESULTS_DIR / f"{chapter}.json"))
        try:
            text = lookup(self.text)
        except (KeyError, ValueError) as error:
            LOGGER.warning("result %s", error.args[0], location=self.get_location())
            text = "??"
        return [nodes.inline(text, text, classes=["course-result"])], []


class ResultTable(SphinxDirective):
    """``{result-table} <chapter>/<key>``: a table that a notebook recorded with ``Results.record_table``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from docutils.statemachine import StringList

        from utils.results import RESULTS_DIR, lookup

        reference = self.arguments[0]
        self.env.note_dependency(str(RESULTS_DIR / f"{reference.partition('/')[0]}.json"))
        try:
            table = lookup(reference)
        except (KeyError, ValueError) as error:
            LOGGER.warning("result %s", error.args[0], location=self.get_location())
            return []
        container = nodes.container(classes=["course-result-table"])
        self.state.nested_parse(StringList(table.splitlines(), source=reference), self.content_offset, container)
        return [container]


def setup(app: Sphinx) -> dict[str, Any]:
    _patch_myst_nb()
    app.add_directive("colab-lab", ColabLab)
    app.add_role("result", ResultRole())
    app.add_directive("result-table", ResultTable)
    app.connect("config-inited", prefer_plotly_mime, priority=900)
    app.connect("builder-inited", copy_plotly_js)
    app.connect("html-page-context", load_scripts_where_needed)
    app.connect("builder-inited", copy_circuitsvis_js)
    app.connect("build-finished", copy_circuitsvis_js)
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after every other handler
    app.connect("html-page-context", warn_about_build_paths)
    app.connect("build-finished", copy_plotly_js_again)
    app.connect("build-finished", copy_labs)
    app.connect("env-get-outdated", labs_outdated)
    app.connect("env-purge-doc", labs_purge)
    app.connect("env-merge-info", labs_merge)
    # env_version: bump when what the directive records in the environment changes (a stale
    # pickled environment is then read afresh; executed notebooks stay in jupyter-cache).
    return {"version": "0.2", "env_version": 2, "parallel_read_safe": True, "parallel_write_safe": True}
