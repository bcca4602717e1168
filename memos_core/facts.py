"""Deterministic fact extraction: first-person statements become third-person facts with a slot.

Used by the fine stage when no LLM is configured or its output is unusable, and for
contradictions: a newer fact on the same ``slot`` ("residence", "favorite:color",
"opinion:cilantro") supersedes the older one; ``slot=None`` facts accumulate. The patterns are
anchored at the start of a clause, so questions, negations ("I don't live in Paris") and
hypotheticals ("if I lived in Paris", "I might move to Rome") never match: a missed fact is
cheaper than a false one. Pure functions, no I/O.

    >>> [f.text for f in extract_facts("No, I moved to Berlin.", speaker="Ana", anchor=datetime(2024, 6, 10))]
    ['Ana lives in Berlin.']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from .text import resolve_dates

__all__ = ["Fact", "extract_facts", "same_value", "slot_of"]


@dataclass(frozen=True)
class Fact:
    """One extracted fact.

    Attributes:
        text: a third-person sentence, "Ana lives in Berlin (as of May 2024)." or "Ana住在柏林。".
        memory_type: "user" (about the person) or "preference" (likes, dislikes, favorites).
        slot: what the fact is about ("residence", "favorite:color", "opinion:jazz",
            "relationship:wife"); a newer fact on the same slot supersedes the older one.
            None for facts that accumulate (allergies, pets).
        value: the slot's value ("Berlin"; "likes"/"dislikes" for opinions).
        key: a short title, "residence: Berlin". tags: ("residence",), ("preference",)...
        event_time: when a date phrase in the statement resolved against the anchor, else None.
        span: ``(start, end)`` of the statement in the input text.
    """

    text: str
    memory_type: str
    slot: str | None
    value: str | None
    key: str
    tags: tuple[str, ...]
    event_time: datetime | None
    span: tuple[int, int]


# --------------------------------------------------------------------------- patterns

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_MONTH_NAMES = "January February March April May June July August September October November December".split()  # noqa: SIM905
_MONTHS = "|".join(_MONTH_NAMES)
_REL = r"wife|husband|partner|girlfriend|boyfriend|fianc[eé]e?|spouse"
_PETS = r"dog|cat|puppy|kitten|rabbit|bunny|hamster|parrot|bird|fish|turtle|tortoise|horse|guinea pig|ferret"
_A = r"(?:(?:now|currently|still|just|recently|finally|actually|also|already|officially|really)\s+)*"
_HAS = r"i(?:\s+|'ve\s+|\s+have\s+)" + _A  # "I moved", "I've moved", "I have just moved"
_AM = r"i(?:'m|\s+am)\s+" + _A
_V = r"\s+(?P<v>.+)"
_ZA = r"(?:现在|目前|已经|刚刚|刚|最近|终于|去年|今年|前年|上个月|上周|昨天|前天|也|还|一直|\d{1,2}月份?)*"
_FAV = r"(?:all-time\s+)?(?:favorite|favourite|fav|fave)\s+(?P<e>[a-z][a-z -]{0,30}?)\s+(?:is|are)"

# (kind, pattern): anchored at the start of a clause; English ones match case-insensitively.
_FIRST_EN = [
    ("residence", rf"(?:i\s+{_A}(?:live|reside)\s+in"
                  rf"|{_HAS}(?:moved|relocated)\s+(?:back\s+)?(?:from\s+[^,.;]{{1,40}}?\s+)?to"
                  rf"|{_AM}(?:living|residing|based)\s+in|i(?:'ve|\s+have)\s+{_A}been\s+living\s+in){_V}"),
    ("employer", rf"(?:i\s+{_A}work\s+(?:at|for)|{_AM}(?:working|employed)\s+(?:at|for|by)"
                 rf"|{_HAS}started\s+work(?:ing)?\s+(?:at|for)"
                 rf"|{_HAS}(?:got|landed|accepted|started|took)\s+(?:a\s+|my\s+)?(?:new\s+)?job\s+(?:at|with)){_V}"),
    ("joined", rf"{_HAS}joined{_V}"),
    ("occupation", rf"(?:i\s+{_A}work|{_AM}working)\s+as\s+(?P<e>an?){_V}"),
    ("occupation", rf"{_AM}(?P<e>an?)\s+(?P<v>.+?)\s+by\s+(?:profession|trade)\b"),
    ("occupation", rf"my\s+(?:job|profession|occupation)\s+is\s+(?:being\s+)?(?P<e>an?){_V}"),
    ("name", rf"(?:my\s+name(?:\s+is|'s)|(?:you\s+can\s+|please\s+)?call\s+me|{_AM}called|i\s+go\s+by){_V}"),
    ("age", r"i(?:'m|\s+am)\s+(?:now\s+)?(?P<v>\d{1,3})(?:\s+years?\s+old\b.*|\s*(?:now|today)?\s*)$"),
    ("age", rf"i\s+{_A}turned\s+(?P<v>\d{{1,3}})(?:\s+years?\s+old)?(?:\s+(?:today|yesterday|last\s.*))?$"),
    ("birthday", r"my\s+birthday(?:\s+is|'s)\s+(?:on\s+|in\s+)?(?P<v>.+)"),
    ("favorite", rf"my\s+{_FAV}{_V}"),
    ("dislikes", rf"(?:i\s+{_A}(?:don't|do\s+not|dont)\s+(?:really\s+|particularly\s+)?(?:like|enjoy|love)"
                 rf"|i\s+{_A}(?:dislike|hate|detest|loathe|despise|(?:can't|cannot|can\s+not)\s+stand)){_V}"),
    ("likes", rf"(?:i\s+{_A}(?:like|love|enjoy|adore)|{_AM}(?:a\s+)?(?:big\s+|huge\s+)?fan\s+of){_V}"),
    ("allergy", rf"{_AM}(?:severely\s+|very\s+|mildly\s+|highly\s+)?allergic\s+to{_V}"),
    ("relationship", rf"my\s+(?P<e>{_REL})(?:'s\s+name\s+is|\s+is\s+(?:called|named)|\s+goes\s+by){_V}"),
    ("relationship_is", rf"my\s+(?P<e>{_REL})\s+is{_V}"),
    ("pet", rf"i(?:\s+have|'ve\s+got|\s+have\s+got|\s+{_A}(?:got|adopted)|(?:'ve|\s+have)\s+{_A}adopted)"
            rf"\s+an?\s+(?:[a-z-]+\s+){{0,2}}?(?P<e>{_PETS})\s+(?:named|called){_V}"),
    ("pet", rf"my\s+(?P<e>{_PETS})(?:'s\s+name\s+is|\s+is\s+(?:called|named)){_V}"),
    ("diet", rf"{_AM}(?:a\s+)?(?:strict\s+)?(?P<v>vegetarian|vegan|pescatarian)(?:\s+(?:now|since\s.*))?$"),
]  # fmt: skip
_S3 = r"(?P<s>[^\s,.;:!?\"]+(?:\s+[^\s,.;:!?\"]+){0,3}?)"
_T = r"\s+(?:(?:now|currently|still|just|recently|finally|also|already|has|had|officially)\s+)*"
_THIRD_EN = [
    ("residence", rf"{_S3}{_T}(?:(?:lives|resides|is\s+living|is\s+based|been\s+living)\s+in"
                  rf"|(?:moved|relocated)\s+(?:back\s+)?(?:from\s+[^,.;]{{1,40}}?\s+)?to){_V}"),
    ("employer", rf"{_S3}{_T}(?:(?:works|is\s+working|is\s+employed|started\s+working)\s+(?:at|for|by)"
                 rf"|(?:got|landed|started|took)\s+(?:a\s+)?(?:new\s+)?job\s+(?:at|with)){_V}"),
    ("joined", rf"{_S3}{_T}joined{_V}"),
    ("occupation", rf"{_S3}{_T}(?:works|is\s+working)\s+as\s+(?P<e>an?){_V}"),
    ("occupation", rf"{_S3}\s+is\s+(?P<e>an?)\s+(?P<v>.+?)\s+by\s+(?:profession|trade)\b"),
    ("name", rf"{_S3}(?:'s\s+name\s+is|\s+is\s+called|\s+is\s+named|\s+goes\s+by){_V}"),
    ("age", rf"{_S3}{_T}(?:is|turned)\s+(?P<v>\d{{1,3}})\s+years?\s+old\b"),
    ("birthday", rf"{_S3}'s\s+birthday\s+is\s+(?:on\s+|in\s+)?(?P<v>.+)"),
    ("favorite", rf"{_S3}'s\s+{_FAV}{_V}"),
    ("dislikes", rf"{_S3}{_T}(?:dislikes|hates|detests|loathes|(?:does\s+not|doesn't)\s+(?:like|enjoy)"
                 rf"|can't\s+stand){_V}"),
    ("likes", rf"{_S3}{_T}(?:likes|loves|enjoys|adores|is\s+a\s+(?:big\s+)?fan\s+of){_V}"),
    ("relationship", rf"{_S3}'s\s+(?P<e>{_REL})\s+is(?:\s+called|\s+named)?{_V}"),
    ("diet", rf"{_S3}\s+is\s+(?:a\s+)?(?P<v>vegetarian|vegan|pescatarian)\b"),
]  # fmt: skip
_ZH = [
    ("residence", r"{S}" + _ZA + r"(?:住在|搬到了|搬到|搬去了|搬去|搬家到了?|定居在)(?P<v>.+)"),
    ("employer", r"{S}" + _ZA + r"在(?P<v>[^，,。！？\s]{1,20}?)(?:工作|上班)"),
    ("name", r"{S}(?:叫|的名字是|的名字叫|名叫)(?P<v>.+)"),
    ("age", r"{S}" + _ZA + r"(?P<v>\d{1,3}|[一二两三四五六七八九十]{1,3})周?岁"),
    ("favorite", r"{S}最喜欢的(?P<e>[^，,。是]{1,8})是(?P<v>.+)"),
    ("dislikes", r"{S}" + _ZA + r"(?:很|非常|真的|特别|一点也|一点都)?(?:不喜欢|讨厌)(?P<v>.+)"),
    ("likes", r"{S}" + _ZA + r"(?:很|非常|真的|特别|超|最)?(?:喜欢|热爱)(?P<v>.+)"),
]


_Table = list[tuple[str, re.Pattern[str], bool]]  # (kind, pattern, is_chinese)


def _compile(english: list[tuple[str, str]], subject: str) -> _Table:
    chinese = [(kind, re.compile(p.replace("{S}", subject)), True) for kind, p in _ZH]
    return [(kind, re.compile(p, re.I), False) for kind, p in english] + chinese


_FIRST = _compile(_FIRST_EN, "我")
_THIRD = _compile(_THIRD_EN, r"(?P<s>[^\s，,。！？；]{1,12}?)")

_SENTENCE = re.compile(r"(?:[^.!?。！？\n]|(?<=\d)\.(?=\d))+[.!?。！？]*")
_CLAUSE_SEP = re.compile(
    r"\s*[;；，]\s*|,?\s+(?:and|but|so|plus|because|since|though|although|while|whereas)\s+(?=(?:i|my)\b)"
    r"|,\s*(?=(?:i|my)\b)|\s*[:：—–-]\s+(?=(?:i|my)\b)",  # "Big news: I moved to Berlin"
    re.I,
)
_LEAD = re.compile(  # discourse and time words before the statement: "No, ", "btw", "Last year, "
    r"\s*(?:(?:no|nope|yes|yeah|yep|well|actually|btw|by the way|oh|ok|okay|so|also|and|but|anyway|hey|hi|"
    r"hmm+|um+|uh|fun fact|haha|lol|sorry|correction|update|fyi|honestly|now|nowadays|these days|"
    r"yesterday|today|recently|lately|last (?:week|month|year)|this (?:week|month|year)|"
    rf"in (?:{_MONTHS})(?: \d{{4}})?|in \d{{4}}|(?:\w+ ){{1,2}}(?:days?|weeks?|months?|years?) ago)"
    r"\b[\s,:!.-]*"
    r"|(?:on|in|since|as of) [^,]{1,30},\s*"
    r"|(?:不是|不对|其实|对了|顺便说一下|顺便|哦|嗯|好的|另外|还有|而且|不过|但是|说实话|去年|今年|前年|上个月|最近|现在)[，,、\s]*)*",
    re.I,
)
_BOUNDARY = (
    r"\s+(?:because|since|so|as|with|when|while|though|although|if|for|from|until|after|before|than|where|"
    r"which|who|that|now|too|anymore|again|lately|these\s+days|right\s+now|at\s+the\s+moment|last|this|next|"
    r"yesterday|today|tomorrow|tonight|ago|every|on|at|in|by|a\s+lot|very\s+much|so\s+much|haha|lol)\b"
    r"|\s*(?:[;:()\[\]\"]|\s-\s|\.\.\.)"
)
_CUT = re.compile(_BOUNDARY + r"|\s*,|\s+(?:and|but|or)\b", re.I)
_CUT_LIST = re.compile(_BOUNDARY + r"|\s+but\b", re.I)  # "allergic to peanuts, shellfish and eggs"
_CUT_OBJECT = re.compile(_BOUNDARY + r"|\s*,|\s+(?:but|or)\b", re.I)  # "I love action and sci-fi movies"
_DANGLING = {"to", "the", "a", "an", "my", "this", "that", "these", "those", "of", "with", "for", "and", "in"}
_ZH_CUT = re.compile(
    r"[，,。.！!？?；;：:、\s（(]|了|的|啦|呀|啊|吧|呢|哦|和|跟|与|工作|上班|生活|住|去|来|已经|\d+年"
)
_ZH_BAD = re.compile(r"哪|什么|谁|吗|几|怎么|^[你他她它我这那]|^家里?$")
_CONNECT = {"of", "de", "del", "la", "le", "the", "and", "&", "upon", "on", "am", "y"}
_REJECT_FIRST = set(  # "I like it", "I love how...", "my favorite color is probably blue"
    "it that this them you him her us how when what where why who which if your those these everything "  # noqa: SIM905
    "nothing anything something being probably maybe both each either neither".split()
)
_PRONOUNS = {"it", "them", "you", "him", "her", "us", "your", "yours"}  # "I love talking to you"
_REJECT_OBJECT = set(
    "idea way fact thought sound look feeling one point think say know hear imagine believe".split()  # noqa: SIM905
)
_COMPANY = set(  # "I joined Acme Labs" is a job; "I joined Reddit" may not be
    "inc corp corporation ltd llc gmbh labs technologies group company co bank university hospital "  # noqa: SIM905
    "systems software consulting partners".split()
)
_DEMONYM = re.compile(r"(?:ese|ish|ian|can|ch|ic|ist|ean)$|^(?:Muslim|Hindu|Jewish|Thai|Greek|Dutch)$")


# --------------------------------------------------------------------------- values


def _cut(raw: str, pattern: re.Pattern[str] = _CUT) -> str:
    m = pattern.search(raw)
    return (raw[: m.start()] if m else raw).strip().strip(".!?,'\"“”‘’ ").strip()


def _capital(tok: str) -> bool:
    return tok != "I" and (tok[0].isupper() or tok[0].isdigit() or re.match(f"[{_CJK}]", tok) is not None)


def _caps(raw: str, max_words: int = 5) -> str | None:
    """The leading capitalised phrase of ``raw`` ("the Netherlands", "Bank of America"), else None."""
    out: list[str] = []
    for tok in _cut(raw).split():
        if not (_capital(tok) or (tok.lower() in _CONNECT and (out or tok.lower() == "the"))):
            break
        out.append(tok)
    while out and out[-1].lower() in _CONNECT:
        out.pop()
    ok = out and len(out) <= max_words and any(c.isalpha() for c in "".join(out))
    return " ".join(out) if ok else None


def _free(raw: str, max_words: int = 5, pattern: re.Pattern[str] = _CUT) -> str | None:
    value = _cut(raw, pattern)
    words = value.lower().split()
    ok = words and len(words) <= max_words and words[0] not in _REJECT_FIRST and "?" not in value
    return value if ok and not _PRONOUNS & set(words) else None


def _obj(phrase: str) -> str:
    """A slot-key form of an object: lowercase, no article, "colour" -> "color", crude singular."""
    phrase = phrase.lower().replace("colour", "color").replace("favourite", "favorite")
    parts = re.sub(r"[^\w\s'-]", " ", phrase).split()
    while len(parts) > 1 and parts[0] in {"to", "the", "a", "an", "my", "some", "all", "any"}:
        parts = parts[1:]
    last = parts[-1] if parts else ""
    if len(last) > 3 and last.isascii() and last.endswith("s") and not last.endswith(("ss", "us", "is")):
        parts[-1] = last[:-3] + "y" if last.endswith("ies") else last[:-1]
    return " ".join(parts)


def _zh_value(raw: str, kind: str) -> str | None:
    m = re.search(r"[，,。！!？?；;\s]|了|啦|呀|啊|吧|哦", raw) if kind == "name" else _ZH_CUT.search(raw)
    value = (raw[: m.start()] if m else raw).strip()
    if kind == "name" and raw[len(value) :].startswith("了"):
        return None  # "我叫外卖了" orders a takeaway
    return value if value and len(value) <= 15 and not _ZH_BAD.search(value) else None


def _zh_int(raw: str) -> int:
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2}
    if raw.isdigit() or "十" not in raw:
        return int(raw) if raw.isdigit() else digits.get(raw, 0) if len(raw) == 1 else 0
    tens, _, ones = raw.partition("十")
    return digits.get(tens, 0 if tens else 1) * 10 + digits.get(ones, 0)


@dataclass(frozen=True)
class _Claim:
    kind: str
    slot: str | None
    value: str  # the slot's value ("Berlin", "likes")
    shown: str  # the phrase in the fact text ("Berlin", "hiking")
    extra: str = ""  # article, favorite object, relation or pet kind


def _claim(kind: str, m: re.Match[str], zh: bool) -> _Claim | None:
    """Validate a pattern match into a claim; None when the value does not look like one."""
    raw, extra = (m.groupdict().get("v") or "").strip(), (m.groupdict().get("e") or "").strip()
    value: str | None
    if kind == "age":
        age = _zh_int(raw) if zh else int(raw)
        return _Claim("age", "age", str(age), str(age)) if 0 < age <= 120 else None
    if zh:
        value = _zh_value(raw, kind)
        if value is None or kind in ("likes", "dislikes"):
            return _Claim(kind, f"opinion:{value}", kind, value) if value else None
        return _Claim(kind, f"favorite:{_obj(extra)}" if kind == "favorite" else kind, value, value, extra)
    if kind in ("residence", "employer", "joined", "name", "relationship", "relationship_is", "pet"):
        value = _caps(raw, 5 if kind in ("residence", "employer", "joined") else 3)
        if value is None:
            return None
        rest = raw[raw.find(value) + len(value) :]
        as_job = re.match(r"\s+(?:as\s+(?:an?|the|their|its)\b|team\b)", rest, re.I)
        if kind == "joined" and not as_job and value.split()[-1].lower().strip(".") not in _COMPANY:
            return None
        if kind == "relationship_is" and (_cut(raw) != value or _DEMONYM.search(value)):
            return None  # "my wife is Italian"
        rel = extra.lower().replace("é", "e")
        if kind.startswith("relationship"):
            return _Claim("relationship", f"relationship:{rel}", value, value, rel)
        slot = None if kind == "pet" else "employer" if kind == "joined" else kind
        return _Claim("employer" if kind == "joined" else kind, slot, value, value, rel)
    if kind == "diet":
        return _Claim("diet", "diet", raw.lower(), raw.lower())
    if kind == "allergy":
        value = _free(raw, 8, _CUT_LIST)
    elif kind in ("likes", "dislikes"):
        value = _free(raw, 6, _CUT_OBJECT)
    else:
        value = _free(raw, 6 if kind == "favorite" else 5)
    if value is not None and value.lower().split()[-1] in _DANGLING:  # "I love to", "I love making this"
        value = None
    if value is None or (kind == "birthday" and not re.search(rf"\b(?:{_MONTHS})\b", value, re.I)):
        return None
    if kind in ("allergy", "birthday"):
        return _Claim(kind, None if kind == "allergy" else kind, value, value)
    if kind == "occupation":
        return _Claim(kind, kind, value, value, "an" if value[0].lower() in "aeiou" else "a")
    if kind == "favorite":
        return _Claim(kind, f"favorite:{_obj(extra)}", value, value, _obj(extra))
    obj = _obj(value)
    if not obj or obj.split()[0] in _REJECT_OBJECT:  # "I like the idea", "I love to hear that"
        return None
    return _Claim(kind, f"opinion:{obj}", kind, value)


def _match(core: str, table: _Table) -> _Claim | None:
    for kind, pattern, zh in table:
        m = pattern.match(core)
        if m is None:
            continue
        subject = m.groupdict().get("s")
        if subject is not None and not _subject_ok(subject):
            continue
        claim = _claim(kind, m, zh)
        if claim is not None:
            return claim
    return None


def _subject_ok(subject: str) -> bool:
    if re.search(f"[{_CJK}]", subject):
        return re.search(r"[不没想要会能可如果打算计划将别的]", subject) is None
    return "'" not in subject and all(w[0].isupper() or w.lower() in ("the", "user") for w in subject.split())


# --------------------------------------------------------------------------- dates and text

_LOCAL_DATE = re.compile(
    rf"\b(?:in|since|back\s+in|as\s+of|from)\s+(?:(?P<m>{_MONTHS})(?:,?\s+(?P<my>\d{{4}}))?|(?P<y>(?:19|20)\d{{2}}))\b"
    r"|(?:(?P<zy>\d{4})年)?(?P<zm>\d{1,2})月|(?P<zy2>\d{4})年",
    re.I,
)


def _when(text: str, anchor: datetime) -> tuple[datetime, str] | None:
    """The finest dated expression of ``text``: (when, precision "day" | "month" | "year")."""
    found: list[tuple[datetime, str]] = []
    for phrase, when in resolve_dates(text, anchor):
        low = phrase.lower()
        found.append((when, "year" if "year" in low or "年" in low else "month" if "month" in low else "day"))
    for m in _LOCAL_DATE.finditer(text):  # "in May", "in May 2023", "since 2020", "2023年5月"
        name, year = m.group("m"), m.group("my") or m.group("y") or m.group("zy") or m.group("zy2")
        month = _MONTH_NAMES.index(name.capitalize()) + 1 if name else int(m.group("zm") or 0)
        if month and not year:  # the latest such month not after the anchor
            year = str(anchor.year if month <= anchor.month else anchor.year - 1)
        try:
            when = datetime(int(year or 0), month or 1, 1, tzinfo=anchor.tzinfo)
        except ValueError:  # "0000年", "13月"
            continue
        found.append((when, "month" if month else "year"))
    rank = {"day": 0, "month": 1, "year": 2}
    return min(found, key=lambda f: rank[f[1]]) if found else None


def _date_text(when: datetime, precision: str, zh: bool) -> str:
    """The date note of a fact: ' (as of 1 May 2023)', ' (as of May 2023)', '（截至2023年）'..."""
    y, m, d = when.year, when.month, when.day
    if zh:
        return "（截至" + {"day": f"{y}年{m}月{d}日", "month": f"{y}年{m}月"}.get(precision, f"{y}年") + "）"
    month = _MONTH_NAMES[m - 1]
    return " (as of " + {"day": f"{d} {month} {y}", "month": f"{month} {y}"}.get(precision, str(y)) + ")"


_EN_TEXT = {
    "residence": "{s} lives in {x}", "employer": "{s} works at {x}", "occupation": "{s} works as {e} {x}",
    "name": "{s}'s name is {x}", "age": "{s} is {x} years old", "birthday": "{s}'s birthday is {x}",
    "favorite": "{s}'s favorite {e} is {x}", "likes": "{s} likes {x}", "dislikes": "{s} dislikes {x}",
    "allergy": "{s} is allergic to {x}", "relationship": "{s}'s {e} is {x}", "pet": "{s} has a {e} named {x}",
    "diet": "{s} is {x}",
}  # fmt: skip
_ZH_TEXT = {
    "residence": "{s}住在{x}", "employer": "{s}在{x}工作", "name": "{s}的名字是{x}", "age": "{s}今年{x}岁",
    "favorite": "{s}最喜欢的{e}是{x}", "likes": "{s}喜欢{x}", "dislikes": "{s}不喜欢{x}",
}  # fmt: skip
_KEY = {"favorite": "favorite {e}:", "relationship": "{e}:", "pet": "pet: {e}"}
_TAGS = {"favorite": ("preference",), "likes": ("preference",), "dislikes": ("preference",)}


def _fact(
    claim: _Claim, who: str, when: tuple[datetime, str] | None, zh: bool, span: tuple[int, int]
) -> Fact:
    mine = f"{who}'s"
    shown = re.sub(r"\bmy\b", lambda _: mine, claim.shown, flags=re.I)  # "I love my job"
    text = (_ZH_TEXT if zh else _EN_TEXT)[claim.kind].format(s=who, x=shown, e=claim.extra)
    text += (_date_text(when[0], when[1], zh) if when else "") + ("。" if zh else ".")
    label = _KEY.get(claim.kind, claim.kind + ":").format(e=claim.extra)
    tags = _TAGS.get(claim.kind) or ((claim.kind, claim.extra) if claim.kind == "pet" else (claim.kind,))
    memory_type = "preference" if tags == ("preference",) else "user"
    return Fact(text, memory_type, claim.slot, claim.value, f"{label} {shown}", tags, when and when[0], span)


# --------------------------------------------------------------------------- public API


def extract_facts(text: str, *, speaker: str, anchor: datetime, role: str = "user") -> list[Fact]:
    """Facts stated by ``speaker`` about themself in ``text``, in order of appearance.

    Only ``role="user"`` messages are read. Dates ("in May", "yesterday", "去年") in the clause,
    or in a fact-less clause just before it ("Last year, I moved..."), set ``event_time``
    resolved against ``anchor`` and add "(as of May 2024)" to the text.

    Example:
        >>> facts = extract_facts("Actually my name is Bob. I live in Berlin!", speaker="Ann",
        ...                       anchor=datetime(2024, 6, 10))
        >>> [(f.slot, f.value, f.text) for f in facts]
        [('name', 'Bob', "Ann's name is Bob."), ('residence', 'Berlin', 'Ann lives in Berlin.')]
    """
    if role != "user":
        return []
    who = speaker.strip() or "User"
    src = text.replace("’", "'")  # same length, so spans still index ``text``
    facts: list[Fact] = []
    seen: set[tuple[str | None, str | None, str]] = set()
    for sentence in _SENTENCE.finditer(src):
        raw = sentence.group(0)
        body = raw.rstrip(".!?。！？")
        if raw[len(body) :].count("?") + raw[len(body) :].count("？") or re.search(r"[吗呢么嘛]\s*$", body):
            continue  # a question states nothing
        context, base = "", sentence.start()
        cuts = [(0, 0), *((sep.start(), sep.end()) for sep in _CLAUSE_SEP.finditer(body)), (len(body), 0)]
        for (_, start), (end, _) in pairwise(cuts):
            start, end = base + start, base + end
            clause = src[start:end]
            lead = _LEAD.match(clause)
            offset = lead.end() if lead else 0
            core = clause[offset:].rstrip()
            claim = _match(core, _FIRST) if core else None
            if claim is None:
                context = "" if core else clause  # a bare "Last year," dates "I moved to Berlin"
                continue
            zh = core.startswith("我")
            when = _when(clause, anchor) or _when(context, anchor)
            context = ""
            fact = _fact(claim, who, when, zh, (start + offset, start + offset + len(core)))
            if (fact.slot, fact.value, fact.text) not in seen:
                seen.add((fact.slot, fact.value, fact.text))
                facts.append(fact)
    return facts


def slot_of(text: str) -> tuple[str, str] | None:
    """``(slot, value)`` of a third-person fact sentence, e.g. one an LLM wrote; None if unknown.

    Example:
        >>> slot_of("Caroline moved to Sweden last year.")
        ('residence', 'Sweden')
        >>> slot_of("User's favourite colour is blue")
        ('favorite:color', 'blue')
    """
    core = text.replace("’", "'").strip()
    lead = _LEAD.match(core)
    core = core[lead.end() :] if lead else core
    claim = _match(core.rstrip(".!?。！？ "), _THIRD)
    if claim is None or claim.slot is None:
        return None
    return claim.slot, claim.value


def _norm(value: str) -> str:
    words = re.sub(r"[\W_]+", " ", value.casefold()).split()
    return " ".join(words[1:] if len(words) > 1 and words[0] == "the" else words)


def same_value(a: str, b: str) -> bool:
    """Slot values equal ignoring case, punctuation, spacing and a leading "the"."""
    return _norm(a) == _norm(b)
