"""Jinja2 templates of the report and the model card (package data under ``templates/``).

HTML templates are autoescaped: every value from a CSV, a model file or a path is text, never
markup; only a value marked ``markupsafe.Markup`` (the histogram, itself rendered from its
autoescaped template) passes through. Markdown templates use the ``md`` filter, which keeps table cells in one cell.
An undefined name in a template is an error, not an empty string.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

_MD_SPECIAL = str.maketrans({"|": "\\|", "<": "&lt;", ">": "&gt;", "`": "'", "\n": " ", "\r": " ", "*": "\\*",
                             "_": "\\_", "[": "\\[", "]": "\\]"})


def markdown_text(value: Any) -> str:
    """Text safe inside a Markdown table cell or line: no markup, no pipes, no line breaks."""
    return str(value).translate(_MD_SPECIAL)


@functools.cache
def environment() -> jinja2.Environment:
    """The one template environment: package templates, autoescaped HTML, strict names."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("edgeleuk.workflow", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "svg.j2"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_text
    return env


def render(template: str, **context: Any) -> str:
    """Render a packaged template by file name (``card.md.j2``, ``report.html.j2``)."""
    return environment().get_template(template).render(**context)

