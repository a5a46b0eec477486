"""mkdocs hook: Sphinx cross-reference roles in docstrings shown as plain code.

volsr's docstrings name other objects as ``:class:`ResolverOptions``` or ``:func:`~a.b.name```
(read by Python's ``help`` and Sphinx alike); mkdocstrings renders the role's name as text before
the code. This drops it, and keeps only the last name where Sphinx's ``~`` asks for that.
"""

from __future__ import annotations

import re

_ROLE_BEFORE_CODE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _plain_code(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, page, config, files) -> str:
    return _ROLE_BEFORE_CODE.sub(_plain_code, html)
