"""The deterministic fact extractor: patterns (EN + ZH), rejections, dates, slot_of, same_value."""

from __future__ import annotations

import doctest
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos_core import facts as facts_module
from memos_core.facts import Fact, extract_facts, same_value, slot_of

ANCHOR = datetime(2024, 6, 10, 12, 0, tzinfo=timezone.utc)


def one(text: str, speaker: str = "Alice") -> Fact:
    found = extract_facts(text, speaker=speaker, anchor=ANCHOR)
    assert len(found) == 1, f"{text!r} gave {found}"
    return found[0]


@pytest.mark.parametrize(
    ("text", "slot", "value", "fact_text"),
    [
        # residence
        ("I live in Berlin.", "residence", "Berlin", "Alice lives in Berlin."),
        ("I'm living in the Netherlands", "residence", "the Netherlands", "Alice lives in the Netherlands."),
        ("I now live in New York City", "residence", "New York City", "Alice lives in New York City."),
        ("I've moved to Paris!", "residence", "Paris", "Alice lives in Paris."),
        ("I have just moved to Lyon", "residence", "Lyon", "Alice lives in Lyon."),
        ("I relocated to Lisbon for work", "residence", "Lisbon", "Alice lives in Lisbon."),
        ("I moved from Lyon to Berlin for a job", "residence", "Berlin", "Alice lives in Berlin."),
        ("Big news: I moved to Oslo!", "residence", "Oslo", "Alice lives in Oslo."),
        ("I just moved to Tokyo, it's great", "residence", "Tokyo", "Alice lives in Tokyo."),
        ("i live in Berlin with my wife", "residence", "Berlin", "Alice lives in Berlin."),
        # employer
        ("I work at Acme Corp as an engineer", "employer", "Acme Corp", "Alice works at Acme Corp."),
        ("I work for Google", "employer", "Google", "Alice works at Google."),
        ("I got a job at Bank of America", "employer", "Bank of America", "Alice works at Bank of America."),
        ("I joined Google as a designer", "employer", "Google", "Alice works at Google."),
        ("I joined Acme Labs", "employer", "Acme Labs", "Alice works at Acme Labs."),
        ("I started working at Stripe", "employer", "Stripe", "Alice works at Stripe."),
        ("btw I work at Acme", "employer", "Acme", "Alice works at Acme."),
        # occupation
        ("I work as a nurse", "occupation", "nurse", "Alice works as a nurse."),
        ("I work as an architect", "occupation", "architect", "Alice works as an architect."),
        ("I'm a software engineer by profession", "occupation", "software engineer",
         "Alice works as a software engineer."),
        ("My job is a teacher", "occupation", "teacher", "Alice works as a teacher."),
        # name (the old speaker label stays the subject)
        ("Actually my name is Bob", "name", "Bob", "Alice's name is Bob."),
        ("Call me Ishmael.", "name", "Ishmael", "Alice's name is Ishmael."),
        ("I'm called Jo", "name", "Jo", "Alice's name is Jo."),
        # age
        ("I am 34 years old", "age", "34", "Alice is 34 years old."),
        ("I'm 34", "age", "34", "Alice is 34 years old."),
        ("I just turned 30", "age", "30", "Alice is 30 years old."),
        # birthday
        ("My birthday is March 5th", "birthday", "March 5th", "Alice's birthday is March 5th."),
        ("my birthday is on 12 October", "birthday", "12 October", "Alice's birthday is 12 October."),
        # favorites
        ("My favorite color is blue", "favorite:color", "blue", "Alice's favorite color is blue."),
        ("my favourite colour is dark green", "favorite:color", "dark green",
         "Alice's favorite color is dark green."),
        ("My favorite film is Up", "favorite:film", "Up", "Alice's favorite film is Up."),
        # opinions
        ("I like hiking", "opinion:hiking", "likes", "Alice likes hiking."),
        ("I really love dogs", "opinion:dog", "likes", "Alice likes dogs."),
        ("I enjoy jazz music", "opinion:jazz music", "likes", "Alice likes jazz music."),
        ("I'm a big fan of sushi", "opinion:sushi", "likes", "Alice likes sushi."),
        ("I love Mel's paintings", "opinion:mel's painting", "likes", "Alice likes Mel's paintings."),
        ("I love to cook", "opinion:cook", "likes", "Alice likes to cook."),
        ("I don't like cilantro", "opinion:cilantro", "dislikes", "Alice dislikes cilantro."),
        ("I do not really enjoy running", "opinion:running", "dislikes", "Alice dislikes running."),
        ("I dislike rain", "opinion:rain", "dislikes", "Alice dislikes rain."),
        ("I hate the winters", "opinion:winter", "dislikes", "Alice dislikes the winters."),
        ("I can't stand jazz", "opinion:jazz", "dislikes", "Alice dislikes jazz."),
        # relationships, diet
        ("My wife is called Maria", "relationship:wife", "Maria", "Alice's wife is Maria."),
        ("my husband is John", "relationship:husband", "John", "Alice's husband is John."),
        ("My boyfriend's name is Sam", "relationship:boyfriend", "Sam", "Alice's boyfriend is Sam."),
        ("I'm vegetarian", "diet", "vegetarian", "Alice is vegetarian."),
        ("I am a vegan now", "diet", "vegan", "Alice is vegan."),
        # Chinese
        ("我住在柏林", "residence", "柏林", "Alice住在柏林。"),
        ("我现在住在上海。", "residence", "上海", "Alice住在上海。"),
        ("我搬到了深圳", "residence", "深圳", "Alice住在深圳。"),
        ("我搬到杭州", "residence", "杭州", "Alice住在杭州。"),
        ("我搬去成都了", "residence", "成都", "Alice住在成都。"),
        ("我在阿里巴巴工作", "employer", "阿里巴巴", "Alice在阿里巴巴工作。"),
        ("我在腾讯上班", "employer", "腾讯", "Alice在腾讯工作。"),
        ("我叫李明", "name", "李明", "Alice的名字是李明。"),
        ("我的名字是王芳。", "name", "王芳", "Alice的名字是王芳。"),
        ("我喜欢吃火锅", "opinion:吃火锅", "likes", "Alice喜欢吃火锅。"),
        ("我不喜欢下雨", "opinion:下雨", "dislikes", "Alice不喜欢下雨。"),
        ("我讨厌香菜", "opinion:香菜", "dislikes", "Alice不喜欢香菜。"),
        ("我最喜欢的颜色是蓝色", "favorite:颜色", "蓝色", "Alice最喜欢的颜色是蓝色。"),
        ("我三十四岁", "age", "34", "Alice今年34岁。"),
    ],
)  # fmt: skip
def test_patterns(text: str, slot: str, value: str, fact_text: str) -> None:
    fact = one(text)
    assert (fact.slot, fact.value, fact.text) == (slot, value, fact_text)
    assert fact.event_time is None
    start, end = fact.span
    assert 0 <= start < end <= len(text)


@pytest.mark.parametrize(
    ("text", "memory_type", "key", "tags"),
    [
        ("I live in Berlin", "user", "residence: Berlin", ("residence",)),
        ("I work at Acme", "user", "employer: Acme", ("employer",)),
        ("I like hiking", "preference", "likes: hiking", ("preference",)),
        ("I don't like cilantro", "preference", "dislikes: cilantro", ("preference",)),
        ("My favorite color is blue", "preference", "favorite color: blue", ("preference",)),
        ("My wife is called Maria", "user", "wife: Maria", ("relationship",)),
        ("I'm vegan", "user", "diet: vegan", ("diet",)),
    ],
)
def test_type_key_and_tags(text: str, memory_type: str, key: str, tags: tuple[str, ...]) -> None:
    fact = one(text)
    assert (fact.memory_type, fact.key, fact.tags) == (memory_type, key, tags)


@pytest.mark.parametrize(
    ("text", "value", "fact_text", "tags"),
    [
        ("I'm allergic to peanuts", "peanuts", "Alice is allergic to peanuts.", ("allergy",)),
        ("I am severely allergic to peanuts, shellfish and eggs", "peanuts, shellfish and eggs",
         "Alice is allergic to peanuts, shellfish and eggs.", ("allergy",)),
        ("I have a dog named Rex", "Rex", "Alice has a dog named Rex.", ("pet", "dog")),
        ("I adopted a little cat called Luna", "Luna", "Alice has a cat named Luna.", ("pet", "cat")),
        ("My hamster's name is Nibbles", "Nibbles", "Alice has a hamster named Nibbles.", ("pet", "hamster")),
    ],
)  # fmt: skip
def test_accumulating_facts(text: str, value: str, fact_text: str, tags: tuple[str, ...]) -> None:
    """Allergies and pets have no slot: a second one adds to the first instead of replacing it."""
    fact = one(text)
    assert (fact.slot, fact.value, fact.text, fact.tags) == (None, value, fact_text, tags)
    assert fact.memory_type == "user"


@pytest.mark.parametrize(
    "text",
    [
        # dangling objects (LoCoMo lines that once gave "Melanie likes to.")
        "I love to",
        # negations and hypotheticals
        "I don't live in Paris",
        "I do not live in Paris anymore",
        "I no longer live in Paris",
        "I used to live in Paris",
        "I never moved to Rome",
        "If I lived in Paris I would be happy",
        "if I live in Paris, that changes things",
        "I might move to Rome",
        "I'm thinking about moving to Rome",
        "I will move to Rome next year",
        "I'd love to live in Rome",
        "Maybe I'll work at Google",
        "I'm not vegetarian",
        "I'm not allergic to anything",
        "My name is not Bob",
        "我不住在北京",
        "如果我住在巴黎，会很开心",
        "我想搬到罗马",
        "我可能会搬到罗马",
        # questions
        "Do you live in Paris?",
        "where do I live?",
        "I live in Berlin, right?",
        "Do I like jazz?",
        "你住在哪里？",
        "我住在哪里",
        "我住在北京吗",
        # not first-person, or not a fact
        "My friend lives in Paris",
        "She moved to Berlin",
        "You work at Google",
        # values that are not names / places / objects
        "I live in a small flat",
        "I work at home",
        "I work for myself",
        "I joined a gym",
        "I joined Reddit",
        "Call me when you can",
        "I'm 5 minutes away",
        "I'm 100% sure",
        "I'm like, totally sure",
        "My job is boring",
        "My birthday is today",
        "My wife is Italian",
        "I like it",
        "I love you",
        "I hate it when it rains",
        "I like the idea of moving",
        "I love to hear that",
        "I love both of them",
        "I love talking to you",
        "I'm Caroline, nice to meet you",
        "I liked the movie",
        "I'm a vegan chef",
        "我在家工作",
        "我爱你",
        "我喜欢你",
        "我叫外卖了",
        "",
        "   ",
        "...",
    ],
)
def test_rejections(text: str) -> None:
    assert extract_facts(text, speaker="Alice", anchor=ANCHOR) == []


def test_assistant_statements_are_ignored() -> None:
    assert extract_facts("I live in Berlin", speaker="bot", anchor=ANCHOR, role="assistant") == []


def test_correction_with_a_month_dates_the_fact() -> None:
    fact = one("No, I moved to Berlin in May")
    assert (fact.slot, fact.value) == ("residence", "Berlin")
    assert fact.event_time is not None
    assert (fact.event_time.year, fact.event_time.month) == (2024, 5)  # resolve_dates has no "in May"
    assert fact.text == "Alice lives in Berlin (as of May 2024)."
    assert fact.span == (4, len("No, I moved to Berlin in May"))


@pytest.mark.parametrize(
    ("text", "date", "note"),
    [
        ("I just moved to Tokyo yesterday", "2024-06-09", " (as of 9 June 2024)"),
        ("I relocated to Lisbon last year", "2023-06-10", " (as of 2023)"),
        ("Last year, I moved to Berlin.", "2023-06-10", " (as of 2023)"),
        ("In 2020, I moved to Berlin.", "2020-01-01", " (as of 2020)"),
        ("I moved to Berlin in September", "2023-09-01", " (as of September 2023)"),  # the latest September
        ("I moved to Berlin in May 2021", "2021-05-01", " (as of May 2021)"),
        ("I started working at Stripe two weeks ago", "2024-05-27", " (as of 27 May 2024)"),
        ("我去年搬到了深圳", "2023-06-10", "（截至2023年）"),
        ("我5月搬到了深圳", "2024-05-01", "（截至2024年5月）"),
    ],
)
def test_dates(text: str, date: str, note: str) -> None:
    fact = one(text)
    assert fact.event_time is not None and fact.event_time.date().isoformat() == date
    assert note in fact.text


def test_a_date_in_an_earlier_statement_does_not_leak() -> None:
    fact = one("I went to Paris last year, I live in Berlin")
    assert (fact.value, fact.event_time) == ("Berlin", None)


def test_multiple_facts_in_one_message() -> None:
    text = "Hi! My name is Bob. I live in Berlin and I work at Acme, but I hate the winters.\nI'm 34"
    found = extract_facts(text, speaker="Alice", anchor=ANCHOR)
    assert [(f.slot, f.value) for f in found] == [
        ("name", "Bob"),
        ("residence", "Berlin"),
        ("employer", "Acme"),
        ("opinion:winter", "dislikes"),
        ("age", "34"),
    ]
    assert [text[s:e] for s, e in (f.span for f in found)] == [
        "My name is Bob",
        "I live in Berlin",
        "I work at Acme",
        "I hate the winters",
        "I'm 34",
    ]
    zh = extract_facts("我叫李明，我住在北京，我喜欢爬山。", speaker="U", anchor=ANCHOR)
    assert [f.text for f in zh] == ["U的名字是李明。", "U住在北京。", "U喜欢爬山。"]


def test_my_in_the_object_is_resolved_and_curly_apostrophes_work() -> None:
    assert one("I love my job").text == "Alice likes Alice's job."
    assert one("I’m living in Rome").value == "Rome"


def test_duplicates_in_one_message_collapse() -> None:
    assert len(extract_facts("I live in Berlin. I live in Berlin!", speaker="A", anchor=ANCHOR)) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The user lives in Berlin.", ("residence", "Berlin")),
        ("Caroline moved to Sweden last year", ("residence", "Sweden")),
        ("The user moved to Berlin in May", ("residence", "Berlin")),
        ("The user has relocated to the Netherlands.", ("residence", "the Netherlands")),
        ("On 8 May 2023, Caroline moved to Sweden.", ("residence", "Sweden")),
        ("User's favourite colour is blue", ("favorite:color", "blue")),
        ("Alice Smith works at Acme.", ("employer", "Acme")),
        ("The user works as a nurse", ("occupation", "nurse")),
        ("Alice is 34 years old", ("age", "34")),
        ("Alice's name is Bob", ("name", "Bob")),
        ("Alice's birthday is March 5", ("birthday", "March 5")),
        ("Alice likes hiking.", ("opinion:hiking", "likes")),
        ("Alice loves dogs", ("opinion:dog", "likes")),
        ("The user dislikes cilantro", ("opinion:cilantro", "dislikes")),
        ("Alice hates jazz.", ("opinion:jazz", "dislikes")),
        ("Alice doesn't like rain", ("opinion:rain", "dislikes")),
        ("Alice's wife is Maria", ("relationship:wife", "Maria")),
        ("Alice is vegan", ("diet", "vegan")),
        ("Alice住在柏林。", ("residence", "柏林")),
        ("用户现在住在上海", ("residence", "上海")),
        ("Alice搬到了柏林", ("residence", "柏林")),
        ("Alice在腾讯工作", ("employer", "腾讯")),
        ("用户不喜欢香菜", ("opinion:香菜", "dislikes")),
        # not a slot, or not about the subject
        ("Alice no longer lives in Berlin", None),
        ("Alice's sister lives in Paris", None),
        ("The user lives in a small apartment", None),
        ("Alice is allergic to nuts", None),
        ("Alice visited Rome", None),
        ("用户不住在北京", None),
        ("Alice的妹妹住在巴黎", None),
        ("", None),
    ],
)
def test_slot_of(text: str, expected: tuple[str, str] | None) -> None:
    assert slot_of(text) == expected


def test_slot_of_agrees_with_extracted_facts() -> None:
    for text in ["I live in Berlin", "My favourite colour is blue", "I don't like cilantro", "我住在柏林"]:
        fact = one(text)
        assert slot_of(fact.text) == (fact.slot, fact.value)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("Berlin", "berlin", True),
        ("Berlin.", " BERLIN ", True),
        ("New York", "new-york", True),
        ("the Netherlands", "Netherlands", True),
        ("柏林", "柏林。", True),
        ("Berlin", "Paris", False),
        ("New York", "York", False),
        ("", "", True),
    ],
)
def test_same_value(a: str, b: str, equal: bool) -> None:
    assert same_value(a, b) is equal


def test_docstring_examples() -> None:
    assert doctest.testmod(facts_module).failed == 0


_CHUNKS = st.sampled_from(
    ["I ", "I'm ", "my ", "live in ", "moved to ", "Berlin", " in May", "name is ", "like ", "don't ",
     ", ", ". ", "? ", "\n", "我", "住在", "搬到了", "北京", "喜欢", "不", "岁", "，", "。", "24", "十"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_CHUNKS, max_size=30).map("".join)))
def test_never_raises_and_spans_are_inside(text: str) -> None:
    for fact in extract_facts(text, speaker="S", anchor=ANCHOR):
        start, end = fact.span
        assert 0 <= start < end <= len(text)
        assert fact.text
    slot_of(text)
