"""Tokenising, keywords, relative dates, near-duplicate overlap."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from memos_core.text import content_of, keywords, lexical_overlap, resolve_dates, tokenize

ANCHOR = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)  # a Monday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I went there yesterday", ["2023-05-07"]),
        ("the day before yesterday", ["2023-05-06"]),
        ("we moved two weeks ago", ["2023-04-24"]),
        ("3 days ago and tomorrow", ["2023-05-05", "2023-05-09"]),
        ("last Friday I ran", ["2023-05-05"]),
        ("see you next week", ["2023-05-15"]),
        ("last month was busy", ["2023-04-08"]),
        ("on 20 May, 2023 then 2023-06-01", ["2023-05-20", "2023-06-01"]),
        ("May 3rd, 2022", ["2022-05-03"]),
        ("我昨天在北京", ["2023-05-07"]),
        ("上个月去了上海", ["2023-04-08"]),
        ("3天前", ["2023-05-05"]),
        ("去年夏天", ["2022-05-08"]),
        ("no time here", []),
    ],
)
def test_resolve_dates(text: str, expected: list[str]) -> None:
    assert [d.date().isoformat() for _, d in resolve_dates(text, ANCHOR)] == expected


def test_tokenize_segments_chinese_and_lowercases() -> None:
    assert tokenize("I'm learning Python 在北京工作") == ["i'm", "learning", "python", "在", "北京", "工作"]
    assert "the" not in tokenize("the cat", drop_stopwords=True)


def test_keywords_rank_salient_terms() -> None:
    kws = keywords("the support group met; the support group was great")
    assert kws[:2] == ["support", "group"]


def test_content_and_overlap() -> None:
    memory = "Ana (8 May 2023, 13:56): note 5 of batch a\nbot (8 May 2023, 13:57): ok"
    assert content_of(memory) == "note 5 of batch a\nok"
    assert lexical_overlap("note 5 of batch a", "note 6 of batch a") < 0.9
    assert lexical_overlap("Same words here", "same words HERE") == 1.0
