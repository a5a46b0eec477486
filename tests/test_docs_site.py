"""The documentation site builds with warnings as errors, and its generated pages hold what the code has."""

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _section(page_html: str, anchor: str) -> str:
    """The HTML from the heading with id ``anchor`` to the next heading of the same level."""
    start = page_html.index(f'id="{anchor}"')
    end = page_html.find("<h2", start)
    return page_html[start : end if end != -1 else None]


def test_cli_page_is_the_help_of_every_command(site):
    import typer.main

    from volsr.cli import app

    group = typer.main.get_command(app)
    names = group.list_commands(group.make_context("volsr", [], resilient_parsing=True))
    assert "infer" in names
    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    text = _text(site / "cli" / "index.html")
    for name in names:
        assert f"$ volsr {name} --help" in text
        assert f"Usage: volsr {name} [OPTIONS]" in text
    infer_help = html.unescape(re.sub(r"<[^>]+>", "", _section(page, "volsr-infer")))
    assert "--spacing" in infer_help and "--dicom" in infer_help
    assert "<!-- volsr-cli-reference -->" not in page


def test_api_page_documents_the_public_objects(site):
    text = _text(site / "api" / "index.html")
    for name in ("SuperResolver", "predict_file", "ResolverOptions", "degrade_file", "infer_cohort"):
        assert name in text
    assert ":class:" not in text and ":func:" not in text


def test_home_page_carries_the_readme_quick_start(site):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = re.search(r"\[start:quick-start\] -->\n(.*?)<!--", readme, re.S).group(1)
    command = next(line for line in quick_start.splitlines() if line.startswith("pip install"))
    assert command in _text(site / "index.html")
