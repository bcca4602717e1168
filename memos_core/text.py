"""Text helpers shared by the stores and the reader: tokenising (CJK-aware), keywords and
relative-date resolution. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta

__all__ = ["content_of", "keywords", "lexical_overlap", "resolve_dates", "tokenize"]

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_RUN_RE = re.compile(rf"([{_CJK}]+)|([^\W_]+(?:['’][^\W_]+)?)", re.UNICODE)

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    i'm it's that's what's don't didn't also yeah oh ok okay really like s t 的 了 在 是 我 你 他 她 它 们
    和 与 也 都 就 吗 呢 吧 啊 这 那 有 一个 什么 怎么
    """.split()  # noqa: SIM905 - a word list reads better as text
)


def _cut_cjk(run: str) -> list[str]:
    try:
        import rjieba
    except ImportError:  # pragma: no cover - rjieba is a core dependency
        return list(run)
    return [t for t in rjieba.cut(run) if t.strip()]


def tokenize(text: str, *, drop_stopwords: bool = False) -> list[str]:
    """Lower-cased word tokens; CJK runs are segmented into words with jieba (rjieba)."""
    out: list[str] = []
    for match in _RUN_RE.finditer(text.lower()):
        cjk, word = match.groups()
        tokens = _cut_cjk(cjk) if cjk else [word.replace("’", "'")]
        for tok in tokens:
            if drop_stopwords and tok in STOPWORDS:
                continue
            out.append(tok)
    return out


_LINE_PREFIX_RE = re.compile(r"^[^\n]*? \([^)\n]*\): ", re.MULTILINE)


def content_of(memory: str) -> str:
    """A window's text without the ``Speaker (time): `` prefix of each line."""
    return _LINE_PREFIX_RE.sub("", memory)


def lexical_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the token sets of two texts (numbers included), 0..1.

    Embeddings barely tell "note 5" from "note 6"; near-duplicate merging and search-time
    de-duplication require this to be high as well, so different facts never collapse.
    """
    ta, tb = set(tokenize(a)), set(tokenize(b))
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def keywords(text: str, k: int = 8) -> list[str]:
    """Up to ``k`` salient terms of ``text``: non-stopwords ranked by frequency, then length."""
    counts = Counter(t for t in tokenize(text, drop_stopwords=True) if len(t) > 1 and not t.isdigit())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))
    return [term for term, _ in ranked[:k]]


# ----------------------------------------------------------------------------- dates

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "few": 3,
    "couple of": 2, "several": 3,
}  # fmt: skip
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
]  # fmt: skip
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_CN_DIGITS = {
    "一": 1,
    "两": 2,
    "二": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}

_NUM = r"(\d+|a couple of|couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bthe day before yesterday\b"), "dby"),
    (re.compile(r"\bthe day after tomorrow\b"), "dat"),
    (re.compile(r"\byesterday\b"), "yesterday"),
    (re.compile(r"\btomorrow\b"), "tomorrow"),
    (re.compile(r"\b(today|tonight|this (?:morning|afternoon|evening))\b"), "today"),
    (re.compile(rf"\b{_NUM} (day|week|month|year)s? ago\b"), "ago"),
    (re.compile(rf"\bin {_NUM} (day|week|month|year)s?\b"), "in"),
    (re.compile(r"\b(last|past|previous|next|this) (week|weekend|month|year)\b"), "rel_unit"),
    (re.compile(rf"\b(last|this|next|on) ({'|'.join(_WEEKDAYS)})\b"), "weekday"),
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), "iso"),
    (re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? ({'|'.join(_MONTHS)}),? (\d{{4}})\b"), "dmy"),
    (re.compile(rf"\b({'|'.join(_MONTHS)}) (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b"), "mdy"),
    (re.compile(r"大前天|前天|昨天|今天|今晚|明天|后天"), "cn_day"),
    (re.compile(r"([上下这本])(?:个)?(周|星期|礼拜|月)"), "cn_unit"),
    (re.compile(r"去年|今年|明年|前年"), "cn_year"),
    (re.compile(r"(\d+|[一两二三四五六七八九十])(?:个)?(天|周|星期|月|年)(前|后|以前|以后)"), "cn_ago"),
]
_CN_DAY = {"大前天": -3, "前天": -2, "昨天": -1, "今天": 0, "今晚": 0, "明天": 1, "后天": 2}
_CN_UNIT = {"周": 7, "星期": 7, "礼拜": 7, "月": 30, "天": 1, "年": 365}


def _shift_months(anchor: datetime, months: int) -> datetime:
    total = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(total, 12)
    day = min(anchor.day, 28)
    return anchor.replace(year=year, month=month + 1, day=day)


def _number(token: str) -> int:
    token = token.strip()
    if token.isdigit():
        return int(token)
    return _NUMBER_WORDS.get(token, _CN_DIGITS.get(token, 1))


def _resolve(kind: str, m: re.Match[str], anchor: datetime) -> datetime | None:
    try:
        return _resolve_unchecked(kind, m, anchor)
    except (ValueError, OverflowError):  # "10000 years ago", "in 999999999999 days"
        return None


def _resolve_unchecked(kind: str, m: re.Match[str], anchor: datetime) -> datetime | None:
    day = timedelta(days=1)
    if kind == "dby":
        return anchor - 2 * day
    if kind == "dat":
        return anchor + 2 * day
    if kind == "yesterday":
        return anchor - day
    if kind == "tomorrow":
        return anchor + day
    if kind == "today":
        return anchor
    if kind in ("ago", "in"):
        n, unit = _number(m.group(1)), m.group(2)
        sign = -1 if kind == "ago" else 1
        if unit == "month":
            return _shift_months(anchor, sign * n)
        if unit == "year":
            return anchor.replace(year=anchor.year + sign * n, day=min(anchor.day, 28))
        return anchor + sign * n * _UNIT_DAYS[unit] * day
    if kind == "rel_unit":
        which, unit = m.group(1), m.group(2)
        sign = {"last": -1, "past": -1, "previous": -1, "next": 1, "this": 0}[which]
        if unit == "month":
            return _shift_months(anchor, sign)
        if unit == "year":
            return anchor.replace(year=anchor.year + sign, day=min(anchor.day, 28))
        return anchor + sign * 7 * day
    if kind == "weekday":
        which, name = m.group(1), m.group(2)
        target = _WEEKDAYS.index(name)
        delta = (anchor.weekday() - target) % 7
        if which == "next":
            return anchor + ((target - anchor.weekday()) % 7 or 7) * day
        if which == "last":
            return anchor - (delta or 7) * day
        return anchor - delta * day  # "on friday" in a chat mostly refers to the past one
    if kind == "iso":
        return anchor.replace(year=int(m.group(1)), month=int(m.group(2)), day=int(m.group(3)))
    if kind == "dmy":
        return anchor.replace(year=int(m.group(3)), month=_MONTHS.index(m.group(2)) + 1, day=int(m.group(1)))
    if kind == "mdy":
        return anchor.replace(year=int(m.group(3)), month=_MONTHS.index(m.group(1)) + 1, day=int(m.group(2)))
    if kind == "cn_day":
        return anchor + _CN_DAY[m.group(0)] * day
    if kind == "cn_unit":
        sign = {"上": -1, "下": 1, "这": 0, "本": 0}[m.group(1)]
        return _shift_months(anchor, sign) if m.group(2) == "月" else anchor + sign * 7 * day
    if kind == "cn_year":
        offset = {"前年": -2, "去年": -1, "今年": 0, "明年": 1}[m.group(0)]
        return anchor.replace(year=anchor.year + offset, day=min(anchor.day, 28))
    if kind == "cn_ago":
        n, unit, direction = _number(m.group(1)), m.group(2), m.group(3)
        sign = -1 if direction in ("前", "以前") else 1
        if unit == "月":
            return _shift_months(anchor, sign * n)
        return anchor + sign * n * _CN_UNIT[unit] * day
    return None


def resolve_dates(text: str, anchor: datetime) -> list[tuple[str, datetime]]:
    """Time expressions in ``text`` resolved against ``anchor`` (the message's chat time).

    Returns ``(phrase, when)`` pairs in order of appearance. "yesterday" in a message of
    8 May 2023 becomes 7 May 2023; explicit dates are taken as written. Coarse phrases
    ("last month") resolve to the same day shifted by the unit.
    """
    lowered = text.lower()
    found: list[tuple[int, int, str, datetime]] = []
    for pattern, kind in _PATTERNS:
        for m in pattern.finditer(lowered):
            if any(s <= m.start() < e or s < m.end() <= e for s, e, _, _ in found):
                continue  # an earlier, more specific pattern already covers this span
            when = _resolve(kind, m, anchor)
            if when is not None:
                found.append((m.start(), m.end(), text[m.start() : m.end()], when))
    found.sort(key=lambda f: f[0])
    return [(phrase, when) for _, _, phrase, when in found]
