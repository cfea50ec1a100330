"""Citations: the numbered context put in the prompt, ``<ref>[n]</ref>`` markers in the
answer, and ``doc_references`` for the cited chunks (WIRE.md §10).

Numbers follow the order chunks were put in the prompt (1 = best). Only cited numbers
are listed, so gaps are normal. A marker whose number points to no chunk is removed
from the answer, so every marker a client sees points to a returned reference; the
streaming filter holds back a possible marker until it is complete.
"""

from __future__ import annotations

import re
from typing import Any

from bailu.knowledge.retrieval import Hit

MARKER = re.compile(r"<ref>\[(\d+)\]</ref>")
_OPEN = "<ref>["
#: every proper prefix of a marker, e.g. "<re", "<ref>[1", "<ref>[12]</r"
_PREFIX = re.compile(r"<(?:r(?:e(?:f(?:>(?:\[(?:\d+(?:\](?:<(?:/(?:r(?:e(?:f)?)?)?)?)?)?)?)?)?)?)?)?")


def reference_text(hit: Hit) -> str:
    return f"【文档名】:{hit.doc_name}\n【标题】:{hit.title}\n【正文】:{hit.text}"


def context_prompt(hits: list[Hit], show_sources: bool) -> str:
    if not hits:
        return "# 知识库\n知识库中没有找到与问题相关的资料。如果无法确定答案，请直接说明不知道。"
    lines = ["# 知识库", "请根据以下资料回答问题。资料中没有的信息，不要编造。"]
    if show_sources:
        lines.append("在用到某条资料的句子末尾用<ref>[编号]</ref>标注出处，例如<ref>[1]</ref>。")
    for i, hit in enumerate(hits, start=1):
        lines.append(f"[{i}] {reference_text(hit)}")
    return "\n".join(lines)


def doc_reference(n: int, hit: Hit) -> dict[str, Any]:
    return {
        "index_id": str(n), "title": hit.title, "doc_id": hit.doc_id, "doc_name": hit.doc_name, "doc_url": None,
        "text": reference_text(hit), "biz_id": None, "images": [], "page_number": list(hit.pages),
    }


class CitationFilter:
    """Passes answer text through, dropping markers that point to no chunk."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.cited: list[int] = []
        self._held = ""

    def _clean(self, text: str) -> str:
        def keep(m: re.Match[str]) -> str:
            n = int(m.group(1))
            if 1 <= n <= self.count:
                if n not in self.cited:
                    self.cited.append(n)
                return m.group(0)
            return ""

        return MARKER.sub(keep, text)

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        for p in (text.rfind(_OPEN), text.rfind("<")):
            if p != -1 and _PREFIX.fullmatch(text[p:]) and not MARKER.fullmatch(text[p:]):
                self._held, text = text[p:], text[:p]  # may become a marker: wait for the rest
                break
        return self._clean(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)

    def references(self, hits: list[Hit]) -> list[dict[str, Any]]:
        return [doc_reference(n, hits[n - 1]) for n in self.cited]
