"""mkdocs hook: the command-line reference, rendered from ``volsr.cli.app`` at build time.

``docs/cli.md`` holds the prose and the marker ``<!-- volsr-cli-reference -->``; this hook puts the
``--help`` text of ``volsr`` and of each of its commands in its place, so the page is always the
help of the code being documented (no copy of it is committed).
"""

from __future__ import annotations

MARKER = "<!-- volsr-cli-reference -->"
#: the width the help is wrapped to, so the page does not depend on the terminal of whoever builds it
HELP_WIDTH = 100


def _plain_help(command, name: str, parent=None) -> tuple[str, object]:
    """``command``'s ``--help`` as plain text (click's layout, not rich's boxes, which read badly in HTML)."""
    command.rich_markup_mode = None  # an attribute of this freshly built command object only
    width = {"terminal_width": HELP_WIDTH, "max_content_width": HELP_WIDTH}
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True, **width)
    return command.get_help(ctx), ctx


def cli_reference() -> str:
    """Markdown: ``volsr --help``, then one section per command with its ``volsr COMMAND --help``."""
    import typer.main

    from volsr.cli import app

    group = typer.main.get_command(app)
    text, ctx = _plain_help(group, "volsr")
    parts = ["```text", "$ volsr --help", text.rstrip(), "```"]
    for name in group.list_commands(ctx):
        help_text, _ = _plain_help(group.get_command(ctx, name), name, parent=ctx)
        parts += ["", f"## volsr {name}", "", "```text", f"$ volsr {name} --help", help_text.rstrip(), "```"]
    return "\n".join(parts) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/cli.md: the marker {MARKER} is missing")
    return markdown.replace(MARKER, cli_reference())
