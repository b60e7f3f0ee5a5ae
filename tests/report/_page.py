"""Parse a report page with :mod:`html.parser` and decode its embedded images."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

_VOID = {"meta", "img", "br", "hr", "link", "input"}


@dataclass
class Page:
    """What the page holds: element ids, link/src URLs, images, visible text, and nesting errors."""

    ids: list[str] = field(default_factory=list)
    srcs: list[str] = field(default_factory=list)
    hrefs: list[str] = field(default_factory=list)
    text: str = ""
    tags: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)

    def images(self) -> list[Image.Image]:
        """Decode every ``data:`` image; raises if one is not a valid PNG/JPEG."""
        out: list[Image.Image] = []
        for src in self.srcs:
            head, _, payload = src.partition(",")
            assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head[:40]
            raw = base64.b64decode(payload, validate=True)
            assert raw[:8] == b"\x89PNG\r\n\x1a\n" or raw[:3] == b"\xff\xd8\xff"
            img = Image.open(io.BytesIO(raw))
            img.load()
            out.append(img)
        return out


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._stack: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.page.ids.append(str(values["id"]))
        if "src" in values:
            self.page.srcs.append(str(values["src"]))
        if "href" in values:
            self.page.hrefs.append(str(values["href"]))
        if tag not in _VOID:
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        else:
            self.page.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def close(self) -> None:
        super().close()
        self.page.unbalanced.extend(self._stack)
        self.page.text = " ".join(" ".join(self._text).split())


def parse(path: Path) -> Page:
    """Parse the HTML file at ``path``."""
    parser = _Parser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.page
