"""LangChain + MemOS: a chat that remembers across sessions.

    python cookbook/langchain_memory.py [DATA_FOLDER]

Session 1 runs through ``RunnableWithMessageHistory`` with ``MemosChatMessageHistory``: the
transcript is kept in the MemOS folder and the user's turns become memories. Session 2 is a
new conversation: its history is empty, yet ``MemosRetriever`` brings back what the user said
in session 1. The chat model is langchain_core's GenericFakeChatModel (offline, scripted);
MemOS, the packaged embedding model and every LangChain runnable are real.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from memos_langchain import MemosChatMessageHistory, MemosRetriever

from memos_core import MemOS

# langchain-core 1.8 marks RunnableWithMessageHistory deprecated (LangGraph persistence is the
# successor); it still works and many apps use it.
warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")


def main(folder: str) -> None:
    with MemOS(folder, scheduler="inline") as mem:
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Known about the user:\n{memories}"),
                MessagesPlaceholder("history"),
                ("human", "{input}"),
            ]
        )
        model = GenericFakeChatModel(
            messages=iter([AIMessage(content="Welcome to Porto, Ana!"), AIMessage(content="Porto, right?")])
        )
        retriever = MemosRetriever(memos=mem, user_id="ana", top_k=3)

        def with_memories(inputs: dict[str, Any]) -> dict[str, Any]:
            docs = retriever.invoke(inputs["input"])
            return {**inputs, "memories": "\n".join(f"- {d.page_content}" for d in docs) or "(nothing yet)"}

        chat = RunnableWithMessageHistory(
            with_memories | prompt | model,
            lambda session_id: MemosChatMessageHistory(mem, user_id="ana", conversation_id=session_id),
            input_messages_key="input",
            history_messages_key="history",
        )
        first = chat.invoke(
            {"input": "Hi! I'm Ana and I just moved to Porto."}, {"configurable": {"session_id": "s1"}}
        )
        print("session 1:", first.content)
        mem.run_pending()  # the fine stage: facts such as "Ana lives in Porto."

        question = "Which city do I live in?"
        print("\nmemories for the new session:")
        for doc in retriever.invoke(question):
            meta = doc.metadata
            print(f"  - {doc.page_content}  (score {meta['score']:.2f}, from {meta['conversation_id']})")
        second = chat.invoke({"input": question}, {"configurable": {"session_id": "s2"}})
        print("session 2:", second.content)
        print(
            "session 2 transcript:",
            len(MemosChatMessageHistory(mem, user_id="ana", conversation_id="s2").messages),
            "messages",
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="memos-langchain-"))
