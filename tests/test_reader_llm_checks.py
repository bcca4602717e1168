"""How the fine stage checks an LLM's facts before believing them.

These use a scripted LLM (it returns a fixed answer) because what is tested is our checking
logic, not a model; the real model runs in tests/test_llms.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from memos_core.errors import LLMOutputError
from memos_core.reader import Limits, WindowConfig, _third_person, fast_items, llm_facts, validate_messages


class Scripted:
    """An LLM that answers from a list (one answer per call)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls: list[Sequence[Mapping[str, Any]]] = []

    @property
    def model_id(self) -> str:
        return "scripted"

    @property
    def supports_vision(self) -> bool:
        return False

    def chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
        self.calls.append(messages)
        return self.answers.pop(0)


def window(*lines: tuple[str, str]) -> Any:
    msgs = validate_messages(
        [
            {"role": "user", "name": who, "content": text, "chat_time": "2024-05-08T13:56:00Z"}
            for who, text in lines
        ],
        Limits(),
    )
    kw: dict[str, Any] = dict(cube_id="c", user_id="u", conversation_id=None, agent_id=None, app_id=None)
    return fast_items(
        msgs, tags=[], info={}, embedding_model="m", window=WindowConfig(size=8, overlap=0), **kw
    )[0]


def facts(answer: dict[str, Any], *lines: tuple[str, str]) -> list[str]:
    return [f.text for f in llm_facts(Scripted(json.dumps(answer)), window(*lines))]


def test_grounded_facts_are_kept_with_stems_matching() -> None:
    """'lives' in the fact and 'live' in the chat are the same word; the fact is kept."""
    got = facts({"facts": [{"memory": "Alice lives in Paris."}]}, ("Alice", "I live in Paris"))
    assert got == ["Alice lives in Paris."]


def test_ungrounded_echoed_and_fragment_facts_are_dropped() -> None:
    """A fact whose words are not in the window (the prompt's example, say) is not stored,
    nor a fragment such as "Alice's Paris." (SmolLM2 writes many on LoCoMo)."""
    got = facts(
        {
            "facts": [
                {"memory": "Bob works at a bakery."},
                {"memory": "Alice has a red kayak."},
                {"memory": "Alice's Paris."},
            ]
        },
        ("Alice", "I live in Paris"),
    )
    assert got == []


def test_first_person_is_resolved_only_with_one_speaker() -> None:
    """'I'/'my' become the only speaker's name with agreeing verbs; with two speakers the
    fact is ambiguous and dropped; second person is always dropped."""
    one = facts(
        {"facts": [{"memory": "I have a dog and my dog is called Rex"}]}, ("Ana", "I have a dog called Rex")
    )
    assert one == ["Ana has a dog and Ana's dog is called Rex."]
    two = facts(
        {"facts": [{"memory": "I have a dog"}, {"memory": "You have a dog"}]},
        ("Ana", "I have a dog"),
        ("Ben", "me too, I have a dog"),
    )
    assert two == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I live in Paris.", "Alice lives in Paris."),
        ("I go hiking with my dad.", "Alice goes hiking with Alice's dad."),
        ("I'd like tea.", "Alice would like tea."),
        ("Me and Bob went out.", "Alice and Bob went out."),
        ("My sister is a nurse.", "Alice's sister is a nurse."),
    ],
)
def test_third_person(text: str, expected: str) -> None:
    assert _third_person(text, "Alice") == expected


def test_bad_json_raises_after_retries_with_the_error_shown() -> None:
    """Two unusable answers: LLMOutputError (the caller falls back to the rules); the second
    request carries the first answer and what was wrong with it."""
    llm = Scripted("Paris is lovely!", '{"facts": "nope"}')
    with pytest.raises(LLMOutputError):
        llm_facts(llm, window(("Alice", "I live in Paris")), attempts=2)
    assert len(llm.calls) == 2 and "not valid" in llm.calls[1][-1]["content"]
