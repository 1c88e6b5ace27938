"""What a client's resent conversation adds to a session: the "no double history" rule.

HTTP clients (the `openai` SDK in a loop, Open WebUI, LangChain) send the whole conversation
on every request, while a named session already holds what came before. The rule, pure:

1. The session's last assistant message is looked for among the client's assistant messages
   (last occurrence first), compared after normalisation: role, text without its whitespace
   (a client may send a reply back as a list of text parts, which are joined with `\n`
   however the reply was split), tool calls by id, name and arguments (as parsed JSON when
   they parse, so re-serialised arguments still match). Reasoning is not compared: clients
   do not send it back.
2. Found at position j: the messages after j are new. The model gets the stored history
   (`agents.defaults.historyLimit` turns) followed by them; they are stored. Unless the first
   of them is the session's message before its last reply while the client's message before
   j is not: the client's j is an earlier reply of the same text (`OK` twice, the last one
   regenerated), and its history diverged (rule 4). So did it when its replies before j
   are not the session's before its last one, as far back as both go (the stored ones in
   the replayed window, empty replies left out): an earlier reply edited, or a message
   deleted, which the model must not be given as it was. A client that sends fewer of them
   (a window of its own) still continues the session; but a client that always sends its
   whole conversation (see rule 3) and sends fewer has had its first turns deleted. The
   questions between them are compared too, where both hold as many: each of the client's
   must be found within the session's, as chat UIs resend an earlier question without the
   documents they first sent around it (a RAG prompt), but not with other words (an earlier
   question edited). Where they hold different numbers of them (an image-only question,
   which the client resends without text; a failed turn asked again) they are not compared.
3. Not found and the client sent no assistant message at all: every message is new (a client
   that sends only its new turn, the classic `user`-keyed session). Not so for a client that
   always sends its whole conversation (a chat UI's chat id names the session): one without
   an assistant message is its first turn again (the first answer regenerated, the first
   question edited), which diverges from a session that holds a reply (rule 4).
4. Not found although the client sent assistant messages: the histories diverged (an edited
   or regenerated turn, a session reset or pruned under a live chat). The client's history
   is the truth for this turn: the model gets it alone, as far back as any turn's context
   goes (session.py), and it is stored, marked as a context start, so later turns replay
   from there and never the diverged past. Only as much of it is stored as a later turn
   replays (`stored_part`): a long chat edited again and again would otherwise store itself
   whole each time.

An empty reply is stored (it is the session's last assistant message) but never replayed;
a client shows it as the gateway's placeholder, which the HTTP layer reads back as an empty
reply, so it is found like any other.

A turn that got no reply (the upstream failed before any text, or it was aborted, or the
model said nothing), or only part of one (`CutShort`: it failed, timed out or was aborted
after some text), and whose messages the next turn begins with was asked again: a client
that sends only its new turn retries it as it was, and one that sends its whole history
(which holds no reply for it) continues from the reply before (`_retried`), rather than
diverge and store its history again. Both are stored (the failed turn did happen), but the
model is given its messages once, and no part of a reply to them before the retry's
(`retries_left_out`): a question twice confuses it, and a tool result twice for one call is
refused by the upstreams. A part of a reply that the next turn does not ask again (the user
read it and asked on, or the client sends it back) is context like any reply, and stays.

A turn the upstream refused as a bad request (400, 413, 422) takes no part in any of this:
it is left out of the replay given here, its reply too (agents/history.py), so a client
continues from the reply before it whether it drops the refused question, edits it, asks
it again or asks something else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs

from agents.providers.base import TOOL_IMAGE_ONLY_TEXT, ChatMessage, ToolCall

# pi-ai's text for a call its conversation never answered (OpenClaw gives the model the same).
NO_RESULT = "No result provided"


@attrs.frozen
class CutShort:
    """A replayed reply that did not finish, with some text (or calls): the upstream failed,
    it timed out or was aborted. Given to the model as any reply, unless the turn after it
    asks again what its turn asked."""

    message: ChatMessage


# A replay as the rule reads it: a message, a reply cut short, or None for an empty reply.
Replayed = ChatMessage | CutShort | None


def _unanswered(entry: Replayed) -> bool:
    """A turn's reply that a retry of the turn replaces: an empty one, or one cut short."""
    return entry is None or isinstance(entry, CutShort)


def _message(entry: Replayed) -> ChatMessage | None:
    return entry.message if isinstance(entry, CutShort) else entry


@attrs.frozen
class TurnInputs:
    messages: tuple[ChatMessage, ...]  # stored in order, and given to the model last
    replaces_history: bool  # rule 4: no stored history for the model


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # no JSON, or nested deeper than the parser goes
        return text.strip()


def _calls(message: ChatMessage) -> tuple[Any, ...]:
    return tuple((c.id, c.name, _arguments(c.arguments)) for c in message.tool_calls)


def same_message(a: ChatMessage, b: ChatMessage) -> bool:
    return _Compared(b).matches(a)


class _Compared:
    """A message as it is compared with others: what the comparison makes of its text and
    calls is made once, when first needed. The session's reply is compared with each of the
    client's assistant messages, which may be 500,000 in one request."""

    def __init__(self, message: ChatMessage) -> None:
        self.message = message

    @functools.cached_property
    def edges(self) -> tuple[str, str]:
        return _edges(self.message.text)

    @functools.cached_property
    def squeezed(self) -> str:
        return _squeezed(self.message.text)

    @functools.cached_property
    def calls(self) -> tuple[Any, ...]:
        return _calls(self.message)

    def matches(self, other: ChatMessage) -> bool:
        """`other` is this message, its text equal but for whitespace. Equal texts, the
        rule, and texts that begin or end with another character are told apart without
        splitting either into words: a turn compares every reply of the window, and a
        question can be a RAG prompt of many kilobytes."""
        ours = self.message
        return (
            other.role == ours.role
            and other.tool_call_id == ours.tool_call_id
            and (
                other.text == ours.text
                or (_edges(other.text) == self.edges and _squeezed(other.text) == self.squeezed)
                or (ours.role == "tool" and _images_alone(other) and _images_alone(ours))
            )
            and (not (other.tool_calls or ours.tool_calls) or _calls(other) == self.calls)
        )


def _images_alone(result: ChatMessage) -> bool:
    """A result of images alone, as a client sends it (no text) or as it is replayed (its
    images not stored, `TOOL_IMAGE_ONLY_TEXT`)."""
    return result.text == TOOL_IMAGE_ONLY_TEXT or not result.text.strip()


def _edges(text: str) -> tuple[str, str]:
    """The first and the last character that is not whitespace ("" when there is none)."""
    text = text.strip()  # the text itself, not a copy, when it has no whitespace around it
    return text[:1], text[-1:]


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _is_empty_reply(message: ChatMessage) -> bool:
    return message.role == "assistant" and not message.text.strip() and not message.tool_calls


def new_inputs(
    last_assistant: ChatMessage | None,
    sent: tuple[ChatMessage, ...],
    whole_conversation: bool = False,
    before_last: ChatMessage | None = None,
    earlier: tuple[Replayed, ...] = (),
    last_cut_short: bool = False,
) -> TurnInputs:
    """The rule above; `sent` is the client's conversation, `last_assistant` the session's
    (`last_cut_short`: it did not finish), `before_last` the session's message before it
    (None when unknown) and `earlier` its replayed messages before it, oldest first;
    `whole_conversation` that the client always sends all of it. An empty reply in `sent`
    (what the client shows for one) is matched like any other, and left out of the inputs:
    no model is given an empty assistant message."""
    if last_assistant is not None:
        found = _after_reply(last_assistant, sent, whole_conversation, before_last, earlier)
        if found is None and _is_empty_reply(last_assistant):
            found = _retried(sent, whole_conversation, earlier, None)
        elif found is None and last_cut_short:
            found = _retried(sent, whole_conversation, earlier, CutShort(last_assistant))
        if found is not None:
            return found
    if not any(message.role == "assistant" for message in sent):
        return _inputs(sent, whole_conversation and last_assistant is not None)
    return _inputs(sent, True)


def _after_reply(
    reply: ChatMessage,
    sent: tuple[ChatMessage, ...],
    whole_conversation: bool,
    before: ChatMessage | None,
    earlier: tuple[Replayed, ...],
) -> TurnInputs | None:
    """Rule 2 for the session's `reply`, `before` and `earlier` the session's messages before
    it; None when the client's history does not continue from it."""
    compared = _Compared(reply)
    for index in range(len(sent) - 1, -1, -1):
        message = sent[index]
        if message.role == "assistant" and compared.matches(message):
            new = sent[index + 1 :]
            if (
                before is not None
                and new
                and index > 0
                and same_message(new[0], before)
                and not same_message(sent[index - 1], before)
            ):
                return None  # an earlier reply of the same text: rule 4
            ours = retries_left_out((*earlier, reply))  # as the model was given them
            if not _history_agrees(sent[: index + 1], ours, whole_conversation):
                return None  # an earlier message edited or deleted: rule 4
            # Nothing after it: the client resent what we hold. Its history stands.
            return _inputs(new, False) if new else _inputs(sent, True)
    return None


def _retried(
    sent: tuple[ChatMessage, ...],
    whole_conversation: bool,
    earlier: tuple[Replayed, ...],
    last: Replayed,
) -> TurnInputs | None:
    """The session's last turn got no reply or part of one (`last`), which the client does
    not hold: a client that sends its whole history and asks again what that turn asked
    continues from the reply before (rule 2), and the model is given the question once (see
    below). None for any other client history (an edited question has diverged)."""
    for prior in range(len(earlier) - 1, -1, -1):
        reply = earlier[prior]
        if isinstance(reply, ChatMessage) and reply.role == "assistant":
            break
    else:
        return None
    found = _after_reply(reply, sent, whole_conversation, None, earlier[:prior])
    if found is None or found.replaces_history:
        return None
    # Every turn since that reply got none, or part of one, and is asked again
    # (`retries_left_out`).
    if replay_before((*earlier[prior + 1 :], last), found.messages):
        return None
    return found


def stored_part(messages: tuple[ChatMessage, ...], user_turns: int) -> tuple[ChatMessage, ...]:
    """What is stored of a client's history that replaces the session's (rule 4): its last
    `user_turns` user turns (`historyLimit`, what the next turn replays of it), at least the
    last one; all of it when it has fewer."""
    wanted = max(user_turns, 1)
    seen = 0
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            seen += 1
            if seen == wanted:
                return messages[index:]
    return messages


def _history_agrees(
    sent: tuple[ChatMessage, ...], ours: tuple[ChatMessage, ...], whole: bool
) -> bool:
    """The client's history `sent` is the session's `ours` (rule 2), both ending with the
    same reply: their replies agree as far back as both go (all of the session's, when the
    client sends its `whole` conversation), and so do the questions before each reply where
    both hold as many."""
    theirs = _turns_back(sent)
    for our_questions, our_reply in _turns_back(ours):
        turn = next(theirs, None)
        if turn is None:
            return not whole
        their_questions, their_reply = turn
        if not same_message(their_reply, our_reply):
            return False
        if len(their_questions) == len(our_questions) and not all(
            _within(a, b) for a, b in zip(their_questions, our_questions, strict=True)
        ):
            return False
    return True


def _turns_back(
    messages: tuple[ChatMessage | None, ...],
) -> Iterator[tuple[list[ChatMessage], ChatMessage]]:
    """Each reply of `messages` (which end with one) with the user messages since the reply
    before, last first. An empty reply (None, or of whitespace alone) has no text a client
    sends back: it is left out, on both sides."""
    reply: ChatMessage | None = None
    questions: list[ChatMessage] = []
    for message in reversed(messages):
        if message is None:
            continue
        if message.role == "user":
            questions.append(message)
        elif message.role == "assistant" and not _is_empty_reply(message):
            if reply is not None:
                yield questions, reply
            reply, questions = message, []
    if reply is not None:
        yield questions, reply


def _within(theirs: ChatMessage, ours: ChatMessage) -> bool:
    """The client's question is found within the session's, whitespace aside. Looked for
    as it is first: a session's question can be a RAG prompt of many kilobytes. With `in`,
    whose search is linear in the texts; `rfind`'s goes back over every partial match, the
    product of their lengths for a text of one letter repeated (minutes for two of 2 MB)."""
    return theirs.text in ours.text or _squeezed(theirs.text) in _squeezed(ours.text)


def _inputs(messages: tuple[ChatMessage, ...], replaces_history: bool) -> TurnInputs:
    return TurnInputs(tuple(m for m in messages if not _is_empty_reply(m)), replaces_history)


def retries_left_out(chats: Sequence[Replayed]) -> tuple[ChatMessage, ...]:
    """`chats`, a replay, as the model is given it: without the empty replies, and without
    the messages of a turn that got none or one cut short, its part of a reply too, when the
    turn after it begins with the same messages (asked again, see above)."""
    if not any(_unanswered(c) for c in chats):
        return cast(tuple[ChatMessage, ...], tuple(chats))
    out: list[ChatMessage] = []
    inputs: list[ChatMessage] = []  # the current turn's user and tool messages
    held: list[ChatMessage] = []  # the turn before's, which got no reply or part of one
    part: ChatMessage | None = None  # that part
    for chat in chats:
        if isinstance(chat, ChatMessage) and chat.role != "assistant":
            inputs.append(chat)
            continue
        if not (held and _repeats(inputs, held)):
            out.extend(held)
            if part is not None:
                out.append(part)
        if _unanswered(chat):
            held, part = inputs, _message(chat)
        else:
            held, part = [], None
            out.extend(inputs)
            out.append(cast(ChatMessage, chat))
        inputs = []
    if not (held and _repeats(inputs, held)):
        out.extend(held)
        if part is not None:
            out.append(part)
    out.extend(inputs)
    return tuple(out)


def replay_before(
    chats: Sequence[Replayed], new: tuple[ChatMessage, ...]
) -> tuple[ChatMessage, ...]:
    """The replay of `chats` the model is given before a turn of `new` messages, which may
    ask again what the last turn of `chats` asked and got no reply, or part of one, to."""
    if not chats or not _unanswered(chats[-1]):
        return retries_left_out(chats)
    context = retries_left_out((*chats, *new))
    return context[: len(context) - len(new)]


def _repeats(inputs: list[ChatMessage], earlier: list[ChatMessage]) -> bool:
    return len(inputs) >= len(earlier) and all(
        same_message(a, b) for a, b in zip(inputs, earlier, strict=False)
    )


def with_tool_names(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """Tool results given the name of the call they answer, from the calls before them."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for message in messages:
        for call in message.tool_calls:
            names[call.id] = call.name
        if message.role == "tool" and message.tool_name is None:
            name = names.get(message.tool_call_id or "")
            if name is not None:
                message = attrs.evolve(message, tool_name=name)
        out.append(message)
    return tuple(out)


def unanswerable(
    history: tuple[ChatMessage, ...], new: tuple[ChatMessage, ...]
) -> ChatMessage | None:
    """The first of the turn's `new` tool results that answers no call: none of the calls
    of the assistant message before it that are not answered yet (an unknown id, a result
    sent twice, one with no call before it). OpenAI and Anthropic refuse such a conversation,
    so the turn is refused before anything of it is stored. Calls that share an id (some
    servers give parallel calls one) are answered once each."""
    if not any(m.role == "tool" for m in new):
        return None
    pending = _OpenCalls()
    for index, message in enumerate((*history, *new)):
        if message.role != "tool":
            pending = _OpenCalls(message.tool_calls)
        elif not pending.answer(message.tool_call_id) and index >= len(history):
            return message
    return None


def paired(
    history: tuple[ChatMessage, ...], new: tuple[ChatMessage, ...]
) -> tuple[ChatMessage, ...]:
    """The model's context, `history` then the turn's `new` messages, with calls and results
    paired as OpenAI and Anthropic require. A call left unanswered (the client asked
    something else, a WebSocket turn followed, the turn was aborted) gets `NO_RESULT` after
    the results it has. A replayed result whose call is not before it (a transcript that
    began with one) is left out: the upstream refused that turn, and would refuse every
    later one. Only the model's context: the transcript keeps what it holds."""
    messages = (*history, *new)
    if not any(m.tool_calls or m.role == "tool" for m in messages):
        return messages
    out: list[ChatMessage] = []
    pending = _OpenCalls()
    for index, message in enumerate(messages):
        if message.role == "tool":
            if not pending.answer(message.tool_call_id) and index < len(history):
                continue
        else:
            out.extend(
                ChatMessage("tool", NO_RESULT, tool_call_id=c.id, tool_name=c.name)
                for c in pending.left()
            )
            pending = _OpenCalls(message.tool_calls)
        out.append(message)
    return tuple(out)


class _OpenCalls:
    """The calls of an assistant message not answered yet, in their order. A result answers
    the first open call of its id (calls that share an id, as some servers give parallel
    calls, are answered once each) found by the id, not by a look at every call: a request
    may hold 100,000 calls and their results in any order."""

    def __init__(self, calls: Sequence[ToolCall] = ()) -> None:
        self._calls: list[ToolCall | None] = list(calls)
        self._open: dict[str, list[int]] = {}  # by id: the open calls' places, last first
        for index in range(len(calls) - 1, -1, -1):
            self._open.setdefault(calls[index].id, []).append(index)

    def answer(self, call_id: str | None) -> bool:
        """Whether an open call has the id `call_id`; the first such is then answered."""
        indices = self._open.get(call_id) if call_id is not None else None
        if not indices:
            return False
        self._calls[indices.pop()] = None
        return True

    def left(self) -> Iterator[ToolCall]:
        return (call for call in self._calls if call is not None)
