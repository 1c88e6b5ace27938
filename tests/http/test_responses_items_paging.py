"""`GET /v1/responses/{id}/input_items` pages through a long chain: a page reads what it
lists (and a turn or so around it), not the whole chain, on both stores; and the pages are
the same as the chain's items listed at once, whatever the chain holds (refused turns, a
failed turn asked again, empty replies, calls and their results, images, a client's history
that replaced the session's)."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
from openai import AsyncOpenAI

import agents.store
import agents.store_postgres
from agents.errors import REFUSED_ERROR
from agents.ids import uuid7
from agents.providers.base import IMAGE_ONLY_TEXT, ChatMessage, ToolCall
from agents.store import StoredMessage, StoredResponse, TurnRecord
from agents.store_protocol import Store
from gateway.appkeys import STATE
from gateway.http import openresponses_items
from gateway.http.openresponses_items import chain_items
from tests.support.configs import merged
from tests.support.counting import BodiesRead
from tests.support.http_client import TOKEN, Client, MakeClient

RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
KEY = "agent:main:long"
LONG_CHAIN = 2_000  # turns


class RowsBuilt:
    """Counts the stored messages the stores build from rows (both stores' `_message`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        built = agents.store._message

        def counted(row: Any) -> StoredMessage:
            self.count += 1
            return built(row)

        monkeypatch.setattr(agents.store, "_message", counted)
        monkeypatch.setattr(agents.store_postgres, "_message", counted)


def store_of(client: Client) -> Store:
    store = client.server.app[STATE].store
    assert store is not None
    return store


def turn(session_id: str, number: int, **fields: Any) -> TurnRecord:
    now = int(time.time() * 1000)
    values: dict[str, Any] = {
        "key": KEY, "agent_id": "main", "session_id": session_id, "run_id": f"resp_{uuid7()}",
        "user_text": f"question {number}", "user_timestamp": now,
        "assistant_text": f"answer {number}", "assistant_timestamp": now, "input_tokens": 1,
        "output_tokens": 1, "stop_reason": "stop", "status": "done",
    }  # fmt: skip
    values.update(fields)
    return TurnRecord(**values)


async def answered(store: Store, record: TurnRecord) -> str:
    """The turn stored, as a stored response: its id."""
    await store.append_turn(record)
    await store.put_response(
        StoredResponse(record.run_id, record.session_id, KEY, "main", 0, json.dumps({}))
    )
    return record.run_id


async def get(client: Client, path: str) -> dict[str, Any]:
    answer = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    body: dict[str, Any] = await answer.json()
    assert answer.status == 200, body
    return body


async def whole(store: Store, session_id: str, run_id: str) -> list[dict[str, Any]]:
    """The chain's items made at once from its whole chain, oldest first."""
    chain = await store.chain_to(session_id, run_id)
    assert chain is not None
    return chain_items(session_id, chain.messages[:-1])


async def every_page(client: Client, run_id: str, order: str, limit: int) -> list[str]:
    ids: list[str] = []
    after = ""
    while True:
        page = await get(
            client, f"/v1/responses/{run_id}/input_items?order={order}&limit={limit}{after}"
        )
        ids += [item["id"] for item in page["data"]]
        assert page["last_id"] == (page["data"][-1]["id"] if page["data"] else None)
        if not page["has_more"]:
            return ids
        assert len(page["data"]) == limit
        after = f"&after={page['last_id']}"


# -- a page's cost ------------------------------------------------------------------------


async def long_chain(client: Client) -> tuple[str, list[str]]:
    store = store_of(client)
    session_id = uuid7()
    last = ""
    for number in range(LONG_CHAIN):
        last = await answered(store, turn(session_id, number))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN - 1
    return last, [item["id"] for item in items]


async def rows_per_page(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, ids = await long_chain(client)
    rows = RowsBuilt(monkeypatch)
    limit = 20
    middle = ids[LONG_CHAIN]
    cases = [
        ("asc", "", ids[:limit]),
        ("desc", "", ids[::-1][:limit]),
        ("asc", middle, ids[LONG_CHAIN + 1 : LONG_CHAIN + 1 + limit]),
        ("desc", middle, ids[LONG_CHAIN - limit : LONG_CHAIN][::-1]),
        ("asc", ids[-3], ids[-2:]),
        ("desc", ids[2], ids[:2][::-1]),
    ]
    for order, after, expected in cases:
        rows.count = 0
        query = f"order={order}&limit={limit}" + (f"&after={after}" if after else "")
        page = await get(client, f"/v1/responses/{run_id}/input_items?{query}")
        assert [item["id"] for item in page["data"]] == expected
        assert page["has_more"] is (len(expected) == limit)
        # The page's messages and a few more, not the chain's 4,000.
        assert rows.count <= 2 * limit + 16, (order, after, rows.count)


async def test_a_page_of_a_long_chain_reads_about_the_page(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rows_per_page(await gateway(RESPONSES_ON), monkeypatch)


@pytest.mark.postgres
async def test_a_page_of_a_long_chain_reads_about_the_page_on_postgres(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await rows_per_page(await gateway(settings), monkeypatch)


async def failed_stretch(client: Client) -> tuple[str, list[str], int]:
    """An answered turn, then a long run of turns that got no answer (each question asked
    twice, both tries failing: four messages, one item), then an answered one: no turn ends
    with an answer between."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    for number in range(LONG_CHAIN):
        record = turn(session_id, number, user_text=f"question {number // 2}",
                      assistant_text="", stop_reason="error", status="error",
                      error_message="upstream provider error (HTTP 500)")  # fmt: skip
        await answered(store, record)
    last = await answered(store, turn(session_id, LONG_CHAIN))
    items = await whole(store, session_id, last)
    assert len(items) == 2 + LONG_CHAIN // 2 + 1
    return last, [item["id"] for item in items], 4


async def client_history(client: Client) -> tuple[str, list[str], int]:
    """One turn whose client sent a long history of its own, which replaced the session's:
    one run of thousands of messages."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    history = tuple(
        ChatMessage(role, f"{role} {number}")
        for number in range(LONG_CHAIN)
        for role in ("user", "assistant")
    )
    record = turn(session_id, 1, inputs=(*history, ChatMessage("user", "now")),
                  context_start=True)  # fmt: skip
    last = await answered(store, record)
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 1
    return last, [item["id"] for item in items], 1


async def many_questions(client: Client) -> tuple[str, list[str], int]:
    """A client's history of thousands of user messages without a reply between, answered;
    listed in the chain of a later response."""
    store = store_of(client)
    session_id = uuid7()
    asked = tuple(ChatMessage("user", f"question {n}") for n in range(2 * LONG_CHAIN))
    await answered(store, turn(session_id, 0, inputs=asked, context_start=True))
    last = await answered(store, turn(session_id, 1))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 2
    return last, [item["id"] for item in items], 1


async def many_questions_asked(client: Client) -> tuple[str, list[str], int]:
    """The same history as the input of the response listed."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    asked = tuple(ChatMessage("user", f"question {n}") for n in range(2 * LONG_CHAIN))
    last = await answered(store, turn(session_id, 1, inputs=asked))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 2
    return last, [item["id"] for item in items], 1


async def refused_retries(client: Client) -> tuple[str, list[str], int]:
    """Answered turns, then a long run of turns the upstream refused (a client retrying a
    request too large for it, 413, thousands of times), then answered ones: a page across
    the run lists the turns either side of it."""
    store = store_of(client)
    session_id = uuid7()
    for number in range(30):
        await answered(store, turn(session_id, number))
    for _ in range(LONG_CHAIN):
        record = turn(session_id, 30, user_text="a question too large", assistant_text="",
                      stop_reason="error", status="error",
                      error_message=f"{REFUSED_ERROR} (HTTP 413)")  # fmt: skip
        await answered(store, record)
    last = ""
    for number in range(31, 61):
        last = await answered(store, turn(session_id, number))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * 60 - 1
    return last, [item["id"] for item in items], 1


async def unanswered_history(client: Client) -> tuple[str, list[str], int]:
    """A client's history of thousands of questions that the upstream failed on (no reply),
    then a turn that asks something else: the history is listed, and its one segment, which
    ends unanswered, is read a piece at a time all the same."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    asked = tuple(ChatMessage("user", f"question {n}") for n in range(2 * LONG_CHAIN))
    failed = turn(session_id, 1, inputs=asked, assistant_text="", stop_reason="error",
                  status="error", error_message="upstream provider error (HTTP 500)")  # fmt: skip
    await answered(store, failed)
    last = await answered(store, turn(session_id, 2))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 3
    return last, [item["id"] for item in items], 1


async def retried_history(client: Client) -> tuple[str, list[str], int]:
    """The same history, failed on, then sent again and answered: the first try is left
    out (`retries_left_out`), and stepped over once a batch of it is read (two messages a
    page's item at most, where it read both tries whole)."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    asked = tuple(ChatMessage("user", f"question {n}") for n in range(2 * LONG_CHAIN))
    failed = turn(session_id, 1, inputs=asked, assistant_text="", stop_reason="error",
                  status="error", error_message="upstream provider error (HTTP 500)")  # fmt: skip
    await answered(store, failed)
    await answered(store, turn(session_id, 2, inputs=asked))
    last = await answered(store, turn(session_id, 3))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 4
    return last, [item["id"] for item in items], 2


async def respaced_history(client: Client) -> tuple[str, list[str], int]:
    """The same, sent again with a few of its messages in other whitespace (a client that
    trims or wraps what it sends): the same questions (`same_message`), so the first try is
    left out and stepped over all the same, those few read with their pairs; it read both
    tries whole."""
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    asked = tuple(ChatMessage("user", f"question {n}") for n in range(2 * LONG_CHAIN))
    failed = turn(session_id, 1, inputs=asked, assistant_text="", stop_reason="error",
                  status="error", error_message="upstream provider error (HTTP 500)")  # fmt: skip
    await answered(store, failed)
    again = tuple(
        ChatMessage("user", f" {m.text}\n") if n % 1000 == 7 else m for n, m in enumerate(asked)
    )
    await answered(store, turn(session_id, 2, inputs=again))
    last = await answered(store, turn(session_id, 3))
    items = await whole(store, session_id, last)
    assert len(items) == 2 * LONG_CHAIN + 4
    return last, [item["id"] for item in items], 3


STRETCHES = [
    failed_stretch, client_history, many_questions, many_questions_asked, refused_retries,
    unanswered_history, retried_history, respaced_history,
]  # fmt: skip


@pytest.mark.parametrize("stretch", STRETCHES)
async def test_a_page_of_a_long_stretch_without_a_cut_reads_about_the_page(
    gateway: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    stretch: Callable[[Client], Awaitable[tuple[str, list[str], int]]],
) -> None:
    await pages_read_about_themselves(await gateway(RESPONSES_ON), monkeypatch, stretch)


@pytest.mark.postgres
@pytest.mark.parametrize("stretch", STRETCHES)
async def test_a_page_of_a_long_stretch_without_a_cut_reads_about_the_page_on_postgres(
    gateway: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    stretch: Callable[[Client], Awaitable[tuple[str, list[str], int]]],
) -> None:
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await pages_read_about_themselves(await gateway(settings), monkeypatch, stretch)


async def pages_read_about_themselves(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    stretch: Callable[[Client], Awaitable[tuple[str, list[str], int]]],
) -> None:
    run_id, ids, per_item = await stretch(client)
    rows = RowsBuilt(monkeypatch)
    limit = 20
    middle = len(ids) // 2
    cases = [
        ("asc", "", ids[:limit]),
        ("desc", "", ids[::-1][:limit]),
        ("asc", ids[middle], ids[middle + 1 : middle + 1 + limit]),
        ("desc", ids[middle], ids[middle - limit : middle][::-1]),
    ]
    for order, after, expected in cases:
        rows.count = 0
        query = f"order={order}&limit={limit}" + (f"&after={after}" if after else "")
        page = await get(client, f"/v1/responses/{run_id}/input_items?{query}")
        assert [item["id"] for item in page["data"]] == expected
        # The page's messages, a read ahead and a few more, not thousands.
        assert rows.count <= per_item * limit + 2 * limit + 16, (order, after, rows.count)


async def no_body_read(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_of(client)
    session_id = uuid7()
    record = turn(session_id, 0)
    await store.append_turn(record)
    body = json.dumps({"output": [{"type": "message", "text": "x" * 1_000_000}]})
    await store.put_response(StoredResponse(record.run_id, session_id, KEY, "main", 0, body))
    bodies = BodiesRead(monkeypatch)
    for query in ("", "?order=asc&limit=1"):
        answer = await client.get(
            f"/v1/responses/{record.run_id}/input_items{query}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status == 200
        assert answer.headers["x-openclaw-session-key"] == KEY
        assert [item["role"] for item in (await answer.json())["data"]] == ["user"]
    # Which session, and its key: not the megabyte of output the response answered.
    assert bodies.chars == 0


async def test_a_page_does_not_read_the_responses_body(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await no_body_read(await gateway(RESPONSES_ON), monkeypatch)


@pytest.mark.postgres
async def test_a_page_does_not_read_the_responses_body_on_postgres(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await no_body_read(await gateway(settings), monkeypatch)


# -- the same items as the chain's whole list ---------------------------------------------

Shape = Callable[[str, int, random.Random, list[TurnRecord]], TurnRecord]


def _normal(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    return turn(session_id, n)


def _refused(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    return turn(session_id, n, assistant_text="", stop_reason="error", status="error",
                error_message=f"{REFUSED_ERROR} (HTTP 400): no")  # fmt: skip


def _failed(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    text = rng.choice(["", "part of it"])
    return turn(session_id, n, assistant_text=text, stop_reason="error", status="error",
                error_message="upstream provider error (HTTP 500)")  # fmt: skip


def _again(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    """The last turn's question asked again."""
    asked = done[-1].user_text if done else "first"
    return turn(session_id, n, user_text=asked)


def _empty(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    return turn(session_id, n, assistant_text="")


def _calls(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    calls = tuple(
        ToolCall(f"call_{n}_{i}", "get_weather", json.dumps({"city": f"c{i}"}))
        for i in range(rng.randint(1, 2))
    )
    return turn(session_id, n, assistant_text=rng.choice(["", "let me see"]), tool_calls=calls,
                stop_reason="toolUse")  # fmt: skip


def _results(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    calls = done[-1].tool_calls if done else ()
    results = tuple(
        ChatMessage("tool", f"{n}C", tool_call_id=c.id, tool_name=c.name) for c in calls
    ) or (ChatMessage("user", f"question {n}"),)
    return turn(session_id, n, inputs=results)


def _image(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    text = rng.choice([IMAGE_ONLY_TEXT, "what is it?"])
    images = {"count": rng.randint(1, 2), "mimeTypes": ["image/png"]}
    return turn(session_id, n, user_text=text, images=images)


def _history(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    """A client's history that replaced the session's."""
    inputs = (
        ChatMessage("user", f"theirs {n}"),
        ChatMessage("assistant", f"their answer {n}"),
        ChatMessage("user", f"question {n}"),
    )
    return turn(session_id, n, inputs=inputs, context_start=rng.random() < 0.5)


def _history_ends(
    session_id: str, n: int, rng: random.Random, done: list[TurnRecord]
) -> TurnRecord:
    """A client's history (an empty reply of its own in it, at times) that the upstream
    refused, failed or answered: one turn of many segments."""
    inputs = tuple(
        ChatMessage(role, "" if role == "assistant" and rng.random() < 0.2 else f"{role} {n}.{i}")
        for i in range(rng.randint(1, 3))
        for role in ("user", "assistant")
    )
    asked = rng.choice([(), (ChatMessage("user", f"question {n}"),)])
    ending = rng.choice([_refused, _failed, _normal])(session_id, n, rng, done)
    return attrs.evolve(ending, inputs=(*inputs, *asked), context_start=rng.random() < 0.3)


def _questions(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    """Many questions in one turn, no reply between (sent again at times), which the upstream
    refused, failed or answered."""
    asked = tuple(ChatMessage("user", f"q{n}.{i}") for i in range(rng.randint(2, 6)))
    if done and done[-1].inputs and rng.random() < 0.5:
        asked = done[-1].inputs  # the last turn's, asked again
    ending = rng.choice([_refused, _failed, _normal])(session_id, n, rng, done)
    return attrs.evolve(ending, inputs=asked)


SHAPES: list[Shape] = [
    _normal, _normal, _refused, _failed, _failed, _again, _again, _empty, _calls, _results,
    _image, _history, _history_ends, _history_ends, _questions, _questions,
]  # fmt: skip


# Runs of refused turns (a page reads the first of a run, then looks its end up), some of
# them of a client's history many messages long, among turns of every other shape.
REFUSED_RUNS: list[Shape] = [
    *SHAPES, _refused, _refused, _refused, _refused, _refused, _refused,
    lambda *args: attrs.evolve(_refused(*args), inputs=_history_ends(*args).inputs),
]  # fmt: skip


def _tried(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    """Many questions in one turn that the upstream failed on, at times after a client's
    history of its own."""
    asked = tuple(ChatMessage("user", f"q{n}.{i}") for i in range(rng.randint(1, 6)))
    if rng.random() < 0.3:
        asked = (ChatMessage("user", f"theirs {n}"), ChatMessage("assistant", ""), *asked)
    return attrs.evolve(_failed(session_id, n, rng, done), inputs=asked)


def _retried(session_id: str, n: int, rng: random.Random, done: list[TurnRecord]) -> TurnRecord:
    """The last turn's questions asked again: all of them, or with one changed, one more or
    one fewer, or in other whitespace; answered, failed or refused."""
    asked = list(done[-1].inputs or (ChatMessage("user", done[-1].user_text),)) if done else []
    change = rng.choice(["same", "same", "changed", "more", "fewer", "spaced"])
    if asked and change == "changed":
        at = rng.randrange(len(asked))
        asked[at] = ChatMessage("user", f"other {n}")
    elif change == "more":
        asked.append(ChatMessage("user", f"and {n}"))
    elif asked and change == "fewer":
        asked.pop()
    elif asked and change == "spaced":
        at = rng.randrange(len(asked))
        asked[at] = attrs.evolve(asked[at], text=f" {asked[at].text}  ")
    ending = rng.choice([_refused, _failed, _failed, _normal])(session_id, n, rng, done)
    return attrs.evolve(ending, inputs=tuple(asked) or (ChatMessage("user", "again"),))


# Long histories the upstream failed on, asked again whole or not quite.
RETRIES: list[Shape] = [*SHAPES, *[_tried] * 6, *[_retried] * 10]


async def same_as_listed_at_once(client: Client, shapes: list[Shape] = SHAPES) -> None:
    store = store_of(client)
    for seed in range(12):
        rng = random.Random(seed)
        session_id = uuid7()
        done: list[TurnRecord] = []
        runs: list[str] = []
        for number in range(rng.randint(1, 40)):
            shape = _results if done and done[-1].tool_calls else rng.choice(shapes)
            record = shape(session_id, number, rng, done)
            runs.append(await answered(store, record))
            done.append(record)
        for run_id in {runs[-1], rng.choice(runs)}:
            items = await whole(store, session_id, run_id)
            ids = [item["id"] for item in items]
            for limit in sorted({1, rng.randint(2, 7), 100}):
                assert await every_page(client, run_id, "asc", limit) == ids, (seed, limit)
                assert await every_page(client, run_id, "desc", limit) == ids[::-1], (seed, limit)
            for after in ids:
                page = await get(client, f"/v1/responses/{run_id}/input_items?after={after}")
                assert page["data"] == items[: ids.index(after)][::-1][:20]


async def test_pages_hold_the_items_of_the_chain_listed_at_once(gateway: MakeClient) -> None:
    await same_as_listed_at_once(await gateway(RESPONSES_ON))


async def test_so_do_they_across_runs_of_refused_turns(gateway: MakeClient) -> None:
    await same_as_listed_at_once(await gateway(RESPONSES_ON), REFUSED_RUNS)


@pytest.mark.postgres
async def test_so_do_they_across_runs_of_refused_turns_on_postgres(
    gateway: MakeClient, pg_url: str
) -> None:
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await same_as_listed_at_once(await gateway(settings), REFUSED_RUNS)


@pytest.mark.parametrize("loose_after", [1, 2, 3])
async def test_so_do_they_when_long_tries_are_asked_again_or_not_quite(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, loose_after: int
) -> None:
    """Segments that end unanswered, longer than `_LOOSE_AFTER` messages: listed whole,
    left out for the retry after them, or read whole when only that tells."""
    monkeypatch.setattr(openresponses_items, "_LOOSE_AFTER", loose_after)
    await same_as_listed_at_once(await gateway(RESPONSES_ON), RETRIES)


@pytest.mark.postgres
async def test_so_do_they_when_long_tries_are_asked_again_on_postgres(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    monkeypatch.setattr(openresponses_items, "_LOOSE_AFTER", 2)
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await same_as_listed_at_once(await gateway(settings), RETRIES)


QUESTIONS = [f"question {n}" for n in range(5)]
RETRY_CASES = {
    "fewer": [QUESTIONS, QUESTIONS[:-1]],
    "more": [QUESTIONS, [*QUESTIONS, "and more"]],
    "twice": [QUESTIONS, QUESTIONS, QUESTIONS],
    "changed": [QUESTIONS, [*QUESTIONS[:2], "other", *QUESTIONS[3:]]],
    "changed last": [QUESTIONS, [*QUESTIONS[:-1], "other"]],
    "spaced": [QUESTIONS, [*QUESTIONS[:3], f"  {QUESTIONS[3]} ", QUESTIONS[4]]],
    "spaced, then changed": [QUESTIONS, [*QUESTIONS[:2], f" {QUESTIONS[2]}", "x", "y"]],
}


@pytest.mark.parametrize("case", RETRY_CASES)
@pytest.mark.parametrize("loose_after", [1, 3])
async def test_so_do_they_when_a_long_try_is_asked_again(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, loose_after: int, case: str
) -> None:
    """Tries that got no reply, each asked again: all of it, more, less, or the same
    but for one message or its whitespace; then a turn after."""
    monkeypatch.setattr(openresponses_items, "_LOOSE_AFTER", loose_after)
    client = await gateway(RESPONSES_ON)
    store = store_of(client)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    tries = RETRY_CASES[case]
    for number, asked in enumerate(tries, 1):
        inputs = tuple(ChatMessage("user", text) for text in asked)
        record = turn(session_id, number, inputs=inputs)
        if number < len(tries):
            record = attrs.evolve(record, assistant_text="", stop_reason="error",
                                  status="error", error_message="upstream 500")  # fmt: skip
        await answered(store, record)
    for run_id in [await answered(store, turn(session_id, 9))]:
        ids = [item["id"] for item in await whole(store, session_id, run_id)]
        for limit in (1, 2, 100):
            assert await every_page(client, run_id, "asc", limit) == ids, limit
            assert await every_page(client, run_id, "desc", limit) == ids[::-1], limit


@pytest.mark.parametrize("loose_after", [1, 2, 3])
async def test_so_do_they_when_long_segments_are_read_in_pieces(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch, loose_after: int
) -> None:
    """A segment longer than `_LOOSE_AFTER` messages is read a piece at a time when its
    items do not depend on the next one's: with a short one, most segments are."""
    monkeypatch.setattr(openresponses_items, "_LOOSE_AFTER", loose_after)
    await same_as_listed_at_once(await gateway(RESPONSES_ON))


@pytest.mark.postgres
async def test_pages_hold_the_items_of_the_chain_listed_at_once_on_postgres(
    gateway: MakeClient, pg_url: str
) -> None:
    settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
    await same_as_listed_at_once(await gateway(settings))


async def test_a_cursor_of_another_chain_or_no_item_is_refused(gateway: MakeClient) -> None:
    """An item of the session outside the chain (a later turn's), an item id made of a real
    message but not listed (a refused turn's question, a call's result named as a message),
    and ids of no message are a 400, as ids not in the list always were."""
    client = await gateway(RESPONSES_ON)
    store = store_of(client)
    session_id = uuid7()
    first = await answered(store, turn(session_id, 0))
    await answered(store, _refused(session_id, 1, random.Random(0), []))
    target = await answered(store, turn(session_id, 2))
    later = await answered(store, turn(session_id, 3))
    listed = await whole(store, session_id, later)
    assert first  # its question is listed in both chains
    hexed = [item["id"].partition("_")[2] for item in listed]
    stored = await store.chain_to(session_id, later)
    assert stored is not None
    refused_question = next(m for m in stored.messages if m.seq == 3)  # turn 1's
    cursors = [
        listed[-1]["id"],  # the later turn's question
        f"msg_{refused_question.id.replace('-', '')}",
        f"fco_{hexed[0]}",
        f"fc_{hexed[0]}_0",
        f"fc_{hexed[0]}_x",
        f"msg_{hexed[0].upper()}",
        "msg_" + "0" * 32,
        "msg_",
        "fc__0",
        "x" * 300,
    ]
    for cursor in cursors:
        answer = await client.get(
            f"/v1/responses/{target}/input_items?after={cursor}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status == 400, cursor
        assert (await answer.json())["error"]["param"] == "after"


# -- through the OpenAI SDK's own paging --------------------------------------------------


@pytest.fixture
async def sdk(gateway: MakeClient) -> AsyncIterator[AsyncOpenAI]:
    client = await gateway(RESPONSES_ON)
    base_url = str(client.server.make_url("/v1"))
    async with AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


async def test_the_sdks_auto_paging_lists_the_chain_in_either_order(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="openclaw", input="turn 0")
    for number in range(1, 30):
        response = await sdk.responses.create(
            model="openclaw", input=f"turn {number}", previous_response_id=response.id
        )
    for order in ("asc", "desc"):
        at_once = await sdk.responses.input_items.list(response.id, order=order, limit=100)
        assert len(at_once.data) == 59 and at_once.has_more is False
        paged = [
            item.model_dump()
            async for item in sdk.responses.input_items.list(response.id, order=order, limit=7)
        ]
        assert paged == [item.model_dump() for item in at_once.data]


async def test_a_transcript_deleted_while_a_page_is_read_is_no_5xx(
    gateway: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor's message found, then its transcript deleted (a session reset or pruned
    meanwhile) before the page is read: the cursor names no item any more, a 400."""
    client = await gateway(RESPONSES_ON)
    store = store_of(client)
    assert isinstance(store, agents.store.SessionStore)
    session_id = uuid7()
    await answered(store, turn(session_id, 0))
    run_id = await answered(store, turn(session_id, 1))
    cursor = (await whole(store, session_id, run_id))[0]["id"]
    found = store.message_seq

    async def then_deleted(session: str, message_id: str) -> int | None:
        seq = await found(session, message_id)
        with sqlite3.connect(store.path) as db:
            db.execute("DELETE FROM messages WHERE session_id = ?", (session,))
        return seq

    monkeypatch.setattr(store, "message_seq", then_deleted)
    answer = await client.get(
        f"/v1/responses/{run_id}/input_items?after={cursor}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status == 400
    assert (await answer.json())["error"]["param"] == "after"
