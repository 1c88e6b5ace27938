"""`/v1/responses` (OpenResponses): create a response, stream it, fetch or delete a stored one,
list its input items (cancel, and a GET asking for a stream, are refused: none is a
background response).

Enabled by `gateway.http.endpoints.responses.enabled`, with chat completions' auth, agent
selection, session headers, image limits, error shape and CORS (gateway/http/common.py), and its
own body limit. A turn runs exactly as a chat completion's does: its run id is the response
id; a client that leaves aborts it (gateway/http/runs.py's `ClientWatch`).

`previous_response_id` continues the session the named response was answered in: the client
sends only what is new (a user message, `function_call_output` items), and the session adds
its history, as for any client that does not resend its conversation (agents/transcript.py).
Without it, a session named by a conversation header holds a chat that the client sends
whole every time, as on chat completions.
A response that later turns followed is continued from, as at OpenAI: the session gives
the model the conversation up to that response and stores it with the new turn as a context
start (`TurnRequest.continues`), so the session's transcript stays one, and its later turns
continue the branch.

`store: false`: the response object is not kept (no GET, no `previous_response_id` to it);
the turn still goes into its session as every HTTP turn does. A keyless request runs on a
fresh stateless session, which maintenance prunes early (`statelessTtl`), its responses with
it. Failed responses are not kept. A response is stored whenever its turn is, also when the
client left before the answer was written (a stream's client saw the id in `response.created`).
Until then, a response to be stored is known as running: a GET answers it `in_progress`,
and naming it in `previous_response_id`, its `input_items` or a DELETE is a 409. On a shared
store, the other processes answer so too: the running process marks it in the store (a
claim, `Store.claim_call`, under `RUNNING_SCOPE` and the response id, holding the session
key and the `in_progress` object), renewed with the turns waiting for a run slot
(agents/session.py `QueuedMarks`, one statement every few seconds for them all), released
once the response is stored (or will not be), and forgotten one lease after a process that
died. It costs a stored turn a write as it starts and one as it ends; a lookup that finds
no stored response asks for the mark, and then the response again (it is stored before its
mark goes).
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import structlog
from aiohttp import web

from agents.config import ModelRef
from agents.errors import AgentError, StoreError
from agents.events import RunEvent
from agents.ids import uuid7
from agents.runs import AgentRun, RunOutcome, RunStatus, TurnRequest
from agents.session import QUEUED_LEASE_S
from agents.store import ResponsePlace, StoredMessage, StoredResponse
from gateway.appkeys import AGENT_ID, MODEL_USED, SESSION_KEY, STATE
from gateway.config.model import Config
from gateway.edge_http import add_route
from gateway.http.common import (
    SESSION_HEADER,
    body_answer,
    error_answer,
    gate,
    is_preflight,
    preflight,
    read_body,
    work_on_body,
)
from gateway.http.openai_wire import (
    MODEL_HEADER,
    TASK_HEADER,
    AgentSelection,
    Conversation,
    RequestError,
    Route,
    bad_request,
    check_format_taken,
    check_images_taken,
    check_tool_results,
    declared_task,
    encode_json,
    error_reply,
    internal_error,
    is_background_task,
    parse_body,
    resolve_session_key,
    select_agent,
    select_model,
)
from gateway.http.openresponses_items import (
    input_items_page,
    message_id_of,
    message_items,
)
from gateway.http.openresponses_wire import (
    IN_PROGRESS,
    ItemIds,
    ResponseEvents,
    ResponseFields,
    ResponseHead,
    build_input,
    duplicate_item,
    input_item_ids,
    input_messages,
    is_response_id,
    item_not_found,
    item_references,
    items_query,
    new_response_id,
    outcome_status,
    output_ids,
    output_items,
    previous_response_not_found,
    response_body,
    response_id_of,
    response_in_progress,
    response_not_cancellable,
    response_not_found,
    response_not_streamable,
    retrieve_streamed,
    validate_request,
    with_items,
    without_image_data,
)
from gateway.http.runs import CLIENT_CLOSED_REQUEST, encode_delta, outcome_of, stream_run
from gateway.responses import JSON_CONTENT_TYPE, json_response
from gateway.state import GatewayState

log = structlog.get_logger()


@attrs.frozen
class _Running:
    head: ResponseHead
    run: AgentRun


# The responses to be stored whose run has not ended (or not been stored yet), by id.
RUNNING = web.AppKey("responses_running", dict[str, _Running])
# The scope of a running response's mark in a shared store, before its id.
RUNNING_SCOPE = "response:"


@attrs.frozen
class _Elsewhere:
    """A response running on another process sharing the store (its mark)."""

    key: str  # its session's
    body: str | None  # its `in_progress` object; None: a mark without it (an older gateway's)


async def _running_elsewhere(state: GatewayState, response_id: str) -> _Elsewhere | None:
    """The mark of a response running on another process; None when there is none (or the
    store is no shared one)."""
    store = state.store
    assert store is not None  # open for as long as the app serves requests
    if not store.shared:
        return None
    key = await store.call_going_on(RUNNING_SCOPE + response_id)
    if key is None:
        return None
    return _Elsewhere(key, await store.call_answer(RUNNING_SCOPE + response_id))


async def _mark_running(state: GatewayState, head: ResponseHead, key: str) -> bool:
    """The response marked running for the other processes sharing the store (see above);
    whether it is. A mark that cannot be written is logged: this process still answers."""
    store, registry = state.store, state.registry
    if store is None or registry is None or not store.shared:
        return False
    scope = RUNNING_SCOPE + head.id
    body = encode_json(response_body(head, IN_PROGRESS, [], None)).decode()
    try:
        await store.claim_call(scope, head.id, key, int(QUEUED_LEASE_S * 1000), answer=body)
    except StoreError as exc:
        log.warning("response_mark_failed", response_id=head.id, error=str(exc))
        return False
    registry.marks.hold(scope, head.id, key, answer=body)
    return True


async def _unmark_running(state: GatewayState, response_id: str) -> None:
    store, registry = state.store, state.registry
    assert store is not None and registry is not None  # marked: both were open
    registry.marks.let_go(RUNNING_SCOPE + response_id)
    try:
        await store.release_hook_call(RUNNING_SCOPE + response_id, response_id)
    except StoreError as exc:  # forgotten once its lease is out
        log.warning("response_unmark_failed", response_id=response_id, error=str(exc))


def register(app: web.Application) -> None:
    app[RUNNING] = {}
    add_route(app, "/v1/responses", create_response)
    add_route(app, "/v1/responses/{response_id}", stored_response)
    add_route(app, "/v1/responses/{response_id}/cancel", cancel_response)
    add_route(app, "/v1/responses/{response_id}/input_items", list_input_items)


def responses_enabled(config: Config) -> bool:
    return config.gateway.http.responses.enabled


# -- POST /v1/responses ---------------------------------------------------------------------


@attrs.frozen
class _Turn:
    fields: ResponseFields
    selection: AgentSelection
    route: Route
    conversation: Conversation
    model: ModelRef
    model_override: bool
    body_chars: int  # the request body's length: what its turn holds while it waits, at least


async def create_response(request: web.Request) -> web.StreamResponse:
    refused = gate(request, ("POST",), responses_enabled)
    if refused is not None:
        return refused
    state = request.app[STATE]
    try:
        turn = await _accept(request, state)
    except RequestError as exc:
        return error_answer(request, exc)
    except StoreError as exc:
        log.error("previous_response_lookup_failed", error=str(exc))
        return error_answer(request, error_reply(exc))  # 503 while a shared store is away
    except ConnectionError:  # the client left while sending its body
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    try:
        return await _run(request, state, turn)
    except Exception:
        log.exception("response_crashed")
        return error_answer(request, internal_error())


async def _accept(request: web.Request, state: GatewayState) -> _Turn:
    config = state.config
    chat = config.gateway.http.chat_completions
    limit = config.gateway.http.responses.max_body_bytes
    raw = await read_body(request, limit, state.options.body_timeout_seconds)
    body = await work_on_body(raw, parse_body, raw)
    fields = validate_request(body)
    headers = request.headers
    agent_header = (headers.get("x-openclaw-agent-id") or "").strip() or headers.get(
        "x-openclaw-agent"
    )
    selection = select_agent(body.get("model"), agent_header, config.agents, chat.unknown_model)
    conversation_header = next(
        ((name, headers[name]) for name in chat.session_headers if headers.get(name)), None
    )
    declared = declared_task(headers.get(TASK_HEADER))

    def routed(background_task: bool, declared_task: bool = declared is True) -> Route:
        return resolve_session_key(
            headers.get(SESSION_HEADER),
            fields.user,
            selection,
            config.agents,
            conversation_header,
            background_task=background_task,
            declared_task=declared_task,
        )

    route = routed(False)
    # The session a header names (the task header's runs elsewhere, but names it all the
    # same): what a continued response or a referenced item must be of.
    requested = None
    if (headers.get(SESSION_HEADER) or "").strip():
        requested = routed(False, declared_task=False).session_key
    if fields.previous_response_id is not None:
        if fields.previous_response_id in request.app[RUNNING]:
            # Its turn is not in the session yet: there is nothing to continue from.
            raise response_in_progress(fields.previous_response_id, "previous_response_id")
        route = await _continued(state, fields.previous_response_id, selection, requested)
        sent = await work_on_body(raw, input_item_ids, body.get("input"))
        if sent:
            await _check_not_sent_again(state, fields.previous_response_id, sent)
    # The references resolved before the input is read as a background task or not (one
    # sent by reference is one): they need only the session a header names.
    value = await _with_references(
        state, request.app[RUNNING], raw, body.get("input"), selection, requested
    )
    if (
        fields.previous_response_id is None  # continued: the response's session, always
        and declared is None
        and conversation_header is not None
        and await work_on_body(raw, _is_background_task, value, fields.instructions)
    ):
        route = routed(True)
    request[AGENT_ID] = route.agent_id
    request[SESSION_KEY] = route.session_key
    agent = config.agents.agent(route.agent_id)
    if agent is None:
        raise bad_request(f"Unknown agent '{route.agent_id}'.")
    override = select_model(headers.get(MODEL_HEADER), agent)
    conversation = await work_on_body(raw, build_input, value, fields.instructions, chat)
    check_tool_results(conversation, route, "input")
    chain = (override,) if override else agent.models
    check_images_taken(conversation.given_images, chain, config.agents)
    check_format_taken(fields.params.get("response_format"), chain, config.agents, "text")
    model = override or agent.primary
    return _Turn(fields, selection, route, conversation, model, bool(override), len(raw))


def _is_background_task(value: object, instructions: str | None) -> bool:
    """Whether `input` is a chat UI's background task (`is_background_task`); an `input`
    that is not well formed is not, and is refused later as it would be anyway."""
    try:
        return is_background_task(input_messages(value, instructions))
    except RequestError:
        return False


async def _continued(
    state: GatewayState,
    response_id: str,
    selection: AgentSelection,
    requested: str | None,
) -> Route:
    """The route of the session `response_id` was answered in. A session key (`requested`)
    or agent that the request names besides must be that session's."""
    store = state.store
    assert store is not None  # open for as long as the app serves requests
    stored = await store.response_place(response_id)  # not its body: the output
    if stored is None:
        if await _running_elsewhere(state, response_id) is not None:
            raise response_in_progress(response_id, "previous_response_id")
        stored = await store.response_place(response_id)  # stored before its mark went
    if stored is None:
        raise previous_response_not_found(response_id)
    _check_owner(stored, selection, requested, f"Response '{response_id}'", "previous_response_id")
    # The conversation the response was answered in must still be its key's session: after
    # a reset, or a delete that kept the transcript (and maybe a new session under the key
    # since), there is nothing to continue, and the session now under the key would answer
    # without that conversation.
    row = await store.get(stored.key)
    stateless = await store.is_stateless(stored.key)
    if row is None or row.session_id != stored.session_id or stateless is None:
        raise previous_response_not_found(response_id)
    return Route(stored.agent_id, stored.key, stateless=stateless)


def _check_owner(
    place: ResponsePlace,
    selection: AgentSelection,
    requested: str | None,
    named: str,
    param: str,
) -> None:
    """What the request continues or refers to (`named`: "Response '<id>'", "Item '<id>'")
    must be of the agent it chose explicitly and of the session a header names."""
    if selection.explicit and selection.agent_id != place.agent_id:
        raise bad_request(
            f"{named} belongs to agent '{place.agent_id}', not '{selection.agent_id}'.", param
        )
    if requested is not None and requested != place.key:
        raise bad_request(f"{named} belongs to another session than the one requested.", param)


async def _check_not_sent_again(state: GatewayState, response_id: str, sent: list[str]) -> None:
    """An item of the chain the request continues is in the context already: sent again (a
    client that sends back what it was answered, or its whole history), it is a 400 naming
    the first, as at OpenAI, not given to the model twice. Read only for an input whose
    items have ids (a client's own items need none): the continued response's output item
    ids (not its body: the whole output), and the stored messages the other ids are made
    of (`message_id_of`), in one lookup of them all, not the chain."""
    store = state.store
    assert store is not None  # open for as long as the app serves requests
    stored = await store.response_output_ids(response_id)
    if stored is None:  # deleted since it was found: continuing it fails as it would have
        raise previous_response_not_found(response_id)
    given = set(stored.item_ids)
    named = {message_id_of(item_id) for item_id in sent} - {None}
    found = await store.messages_by_id(sorted(m for m in named if m is not None))
    found = tuple(m for m in found if m.session_id == stored.session_id)
    bounds = await store.chain_bounds(stored.session_id, response_id) if found else None
    low, high = bounds or (1, 0)
    for message in found:
        if low <= message.seq <= high:
            given |= {item["id"] for item in message_items(message)}
    repeated = next((item_id for item_id in sent if item_id in given), None)
    if repeated is not None:
        raise duplicate_item(repeated)


async def _with_references(
    state: GatewayState,
    running: dict[str, _Running],
    raw: bytes,
    value: Any,
    selection: AgentSelection,
    requested: str | None,
) -> Any:
    """`input` with each `item_reference` replaced by the item it names, as `input_items`
    lists it: OpenAI's way to send a stored item again by id. An item is found where its
    response could be continued (`_continued`'s rules); an id of nothing found there, or
    of an item whose images were sent (their data is not kept), is a 400 naming the first.
    An item of a response still running (its turn or its object not stored yet) is the 409
    of a `previous_response_id` to it, on every process sharing the store. The messages
    the ids are made of are read in one lookup; then each response and session they are
    of, once."""
    references = await work_on_body(raw, item_references, value)
    if not references:
        return value
    store = state.store
    assert store is not None  # open for as long as the app serves requests
    named = {item_id: message_id_of(item_id) for _, item_id in references}
    messages = {
        message.id: message
        for message in await store.messages_by_id(sorted({m for m in named.values() if m}))
    }
    places: dict[str, ResponsePlace | None] = {}
    sessions: dict[str, str | None] = {}  # by key: its session's id now
    found: dict[str, dict[str, Any]] = {}

    async def placed(message_id: str | None) -> tuple[StoredMessage | None, ResponsePlace | None]:
        message = messages.get(message_id) if message_id is not None else None
        run_id = message.run_id if message is not None else None
        if run_id is not None and run_id not in places:
            places[run_id] = await store.response_place(run_id)
        return message, places.get(run_id) if run_id is not None else None

    for _, item_id in references:
        if item_id in found:
            continue
        message_id = named[item_id]
        message, place = await placed(message_id)
        if message_id is not None and place is None:
            # Not stored yet: of a response still running, or stored (then unmarked) since
            # the lookup, once it is not running: looked up again.
            response_id = (message.run_id if message else None) or response_id_of(message_id)
            if response_id in running or await _running_elsewhere(state, response_id):
                raise response_in_progress(response_id, "input")
            messages.update((m.id, m) for m in await store.messages_by_id([message_id]))
            places.pop(response_id, None)
            message, place = await placed(message_id)
        if message is None or place is None or place.session_id != message.session_id:
            raise item_not_found(item_id)
        _check_owner(place, selection, requested, f"Item '{item_id}'", "input")
        if place.key not in sessions:
            row = await store.get(place.key)
            sessions[place.key] = row.session_id if row is not None else None
        item = next((i for i in message_items(message) if i["id"] == item_id), None)
        if sessions[place.key] != place.session_id or item is None:
            raise item_not_found(item_id)
        if without_image_data(item):
            raise bad_request(
                f"Item '{item_id}' held images, whose data is not kept: send it whole.", "input"
            )
        found[item_id] = item
    items = {index: found[item_id] for index, item_id in references}
    return await work_on_body(raw, with_items, value, items)


async def _run(request: web.Request, state: GatewayState, turn: _Turn) -> web.StreamResponse:
    # The reply's stored id, chosen now: the output items' ids are made of it, so a later
    # response's input items list them under the same ids.
    reply_id = uuid7()
    reply = reply_id.replace("-", "")
    head = ResponseHead(
        new_response_id(reply), int(time.time()), turn.selection.model, turn.fields, reply
    )
    # Marked before the run starts: the stream subscribes to it before any await, and a
    # client knows the id only from the answer.
    marked = turn.fields.store and await _mark_running(state, head, turn.route.session_key)
    try:
        return await _submitted(request, state, turn, head, reply_id)
    finally:
        if marked:
            await _unmark_running(state, head.id)


async def _submitted(
    request: web.Request, state: GatewayState, turn: _Turn, head: ResponseHead, reply_id: str
) -> web.StreamResponse:
    registry = state.registry
    assert registry is not None  # open for as long as the app serves requests
    route, conversation = turn.route, turn.conversation
    try:
        if not route.new_key:  # OpenClaw's: an archived session takes no new work
            await registry.refuse_archived(route.session_key)
        run = registry.submit(
            TurnRequest(
                agent_id=route.agent_id,
                session_key=route.session_key,
                run_id=head.id,
                text=conversation.text,
                images=conversation.images,
                extra_system_prompt=conversation.extra_system_prompt,
                params=turn.fields.params,
                stateless=route.stateless,
                new_key=route.new_key,
                messages=conversation.messages,
                whole_conversation=route.whole_conversation,
                continues=turn.fields.previous_response_id,
                request_chars=turn.body_chars,
                model=turn.model if turn.model_override else None,
                reply_id=reply_id,
            )
        )
    except AgentError as exc:
        return error_answer(request, error_reply(exc))
    if not turn.fields.store:
        return await _answer(request, state, turn, head, run)
    running = request.app[RUNNING]
    running[head.id] = _Running(head, run)
    try:
        return await _answer(request, state, turn, head, run)
    finally:
        # Stored by now, or never will be (failed, or the store refused).
        del running[head.id]


async def _answer(
    request: web.Request, state: GatewayState, turn: _Turn, head: ResponseHead, run: AgentRun
) -> web.StreamResponse:
    if turn.fields.stream:
        subscription = run.subscribe()  # before any await: it sees every event
        request[MODEL_USED] = str(turn.model)
        events = _Events(ResponseEvents(head), state)
        keepalive_s = state.options.sse_keepalive_seconds
        response = await stream_run(
            request, run, subscription, events, events.events.start(), keepalive_s
        )
        if not events.closed:
            await _keep_unsent(state, head, run)
        return response
    return await _complete(request, state, run, head)


async def _keep(
    state: GatewayState, head: ResponseHead, run: AgentRun, body: dict[str, object]
) -> None:
    """Store the response object, when asked to and the turn has a transcript."""
    store, outcome = state.store, run.outcome
    if not head.fields.store or store is None or outcome is None or outcome.session_id is None:
        return
    stored = StoredResponse(
        head.id,
        outcome.session_id,
        run.session_key,
        run.agent_id,
        outcome.ended_at,
        encode_json(body).decode(),
        output_ids(body),
    )
    try:
        await store.put_response(stored)
    except StoreError as exc:
        # The answer still goes out; only a later GET or continuation will not find it.
        log.warning("response_store_failed", response_id=head.id, error=str(exc))


async def _keep_unsent(state: GatewayState, head: ResponseHead, run: AgentRun) -> None:
    """The client left before its answer was written: the response object is stored all
    the same once the run ended (aborted, when the client left first), as its turn is. Built
    from the outcome, as a non-streamed answer is: the relay renders nothing for a client
    gone (no per-chunk work for nobody), so its items are not those the stream opened."""
    if not head.fields.store:
        return
    outcome = await run.wait()  # soon: a run whose client left is aborted, or has ended
    if outcome.status == RunStatus.FAILED or outcome.started_at is None:
        return  # failed responses are not kept; a run that never started stored no turn
    await _keep(state, head, run, _final_body(head, outcome))


def _final_body(head: ResponseHead, outcome: RunOutcome) -> dict[str, object]:
    status, details = outcome_status(False, outcome.stop_reason)
    output = output_items(
        outcome.text,
        outcome.reasoning,
        outcome.tool_calls,
        status,
        outcome.parts,
        outcome.part_starts,
        ItemIds(head.reply),
    )
    return response_body(head, status, output, outcome.usage, incomplete_details=details)


async def _complete(
    request: web.Request, state: GatewayState, run: AgentRun, head: ResponseHead
) -> web.StreamResponse:
    outcome = await outcome_of(request, run)
    if isinstance(outcome, web.StreamResponse):
        if outcome.status == CLIENT_CLOSED_REQUEST:  # the run has ended (aborted, mostly)
            await _keep_unsent(state, head, run)
        return outcome
    body = _final_body(head, outcome)
    await _keep(state, head, run, body)
    return body_answer(request, body)


@attrs.define
class _Events:
    """A run as OpenResponses' semantic events; the final object is stored, then announced.
    `closed` once the last event is rendered: until then the object is not stored."""

    events: ResponseEvents
    state: GatewayState
    closed: bool = False

    def event(self, event: RunEvent) -> bytes | None:
        return encode_delta(self.events, event)

    async def end(self, run: AgentRun, outcome: RunOutcome) -> bytes:
        self.closed = True
        out, body = self.events.finish(outcome.stop_reason, outcome.usage)
        await _keep(self.state, self.events.head, run, body)
        return out

    def failure(self, error: RequestError) -> bytes:
        self.closed = True
        return self.events.fail(error)


# -- GET / DELETE /v1/responses/{id} ---------------------------------------------------------


# A stored response is also deleted, which the other paths' preflight answer does not allow.
STORED_RESPONSE_METHODS = "GET, DELETE, OPTIONS"


async def stored_response(request: web.Request) -> web.StreamResponse:
    config = request.app[STATE].config
    if responses_enabled(config) and is_preflight(request):
        return preflight(request, config, STORED_RESPONSE_METHODS)
    refused = gate(request, ("GET", "HEAD", "DELETE"), responses_enabled)
    if refused is not None:
        return refused
    response_id = request.match_info["response_id"]
    store = request.app[STATE].store
    assert store is not None  # open for as long as the app serves requests
    if not is_response_id(response_id):
        return error_answer(request, response_not_found(response_id))
    streamed = False
    if request.method != "DELETE":
        try:
            streamed = retrieve_streamed(request.query)
        except RequestError as exc:
            return error_answer(request, exc)
    state = request.app[STATE]
    running = request.app[RUNNING].get(response_id)
    elsewhere: _Elsewhere | None = None
    try:
        if request.method == "DELETE":
            deleted = await store.delete_response(response_id)
            if not deleted and running is None:
                elsewhere = await _running_elsewhere(state, response_id)
                if elsewhere is None:  # or stored, then unmarked, since the first try
                    deleted = await store.delete_response(response_id)
            if not deleted:
                if running is not None or elsewhere is not None:
                    # It would be stored all the same once it ends.
                    return error_answer(request, response_in_progress(response_id))
                return error_answer(request, response_not_found(response_id))
            return json_response({"id": response_id, "object": "response", "deleted": True})
        stored = await store.get_response(response_id)
        if stored is None and running is None:
            elsewhere = await _running_elsewhere(state, response_id)
            if elsewhere is None:  # stored, then unmarked, since the first lookup
                stored = await store.get_response(response_id)
    except StoreError as exc:
        log.error("response_lookup_failed", error=str(exc))
        return error_answer(request, error_reply(exc))  # 503 while a shared store is away
    if streamed and (stored is not None or running is not None or elsewhere is not None):
        return error_answer(request, response_not_streamable(response_id))
    if stored is None:
        # Running when the lookup began (it is registered before anyone knows its id), and
        # not stored yet: a response is stored before it stops being running.
        if elsewhere is not None:
            if elsewhere.body is None:  # a mark without it: running, all the same
                return error_answer(request, response_in_progress(response_id))
            return web.Response(
                body=elsewhere.body.encode(),
                headers={"Content-Type": JSON_CONTENT_TYPE, SESSION_HEADER: elsewhere.key},
            )
        if running is None:
            return error_answer(request, response_not_found(response_id))
        body = response_body(running.head, IN_PROGRESS, [], None)
        return json_response(body, headers={SESSION_HEADER: running.run.session_key})
    return web.Response(
        body=stored.body.encode(),
        headers={"Content-Type": JSON_CONTENT_TYPE, SESSION_HEADER: stored.key},
    )


# -- GET /v1/responses/{id}/input_items ------------------------------------------------------


async def list_input_items(request: web.Request) -> web.StreamResponse:
    """The items of the conversation a stored response answered, as OpenAI lists them: its
    chain of earlier responses (their inputs and outputs) and its own input, read from its
    session's transcript: from the context the turn began in (a client's history that
    replaced the session's, or the branch a continued older response began) through the
    turn's input, as the session holds them, and as the model was given them: not the
    turns the upstream refused (as at OpenAI, where a refused request joins no chain), a
    turn asked again once, no empty replies (one of reasoning alone is listed as it was
    answered, its reasoning and the placeholder message, though the model is not given it),
    and no `instructions` (they join the system prompt). An image is an `input_image` part
    without its data, which is not stored. A running response is a 409, as for a DELETE:
    its turn is not stored yet."""
    refused = gate(request, ("GET", "HEAD"), responses_enabled)
    if refused is not None:
        return refused
    response_id = request.match_info["response_id"]
    if not is_response_id(response_id):
        return error_answer(request, response_not_found(response_id))
    try:
        query = items_query(request.query)
    except RequestError as exc:
        return error_answer(request, exc)
    store = request.app[STATE].store
    assert store is not None  # open for as long as the app serves requests
    running = response_id in request.app[RUNNING]
    try:
        place = await store.response_place(response_id)  # not its body: the output
        if place is None and not running:
            running = await _running_elsewhere(request.app[STATE], response_id) is not None
            if not running:  # stored, then unmarked, since the first lookup
                place = await store.response_place(response_id)
        if place is None:
            if running:
                return error_answer(request, response_in_progress(response_id))
            return error_answer(request, response_not_found(response_id))
        page = await input_items_page(store, place.session_id, response_id, query)
    except RequestError as exc:
        return error_answer(request, exc)
    except StoreError as exc:
        log.error("response_lookup_failed", error=str(exc))
        return error_answer(request, error_reply(exc))  # 503 while a shared store is away
    return json_response(page, headers={SESSION_HEADER: place.key})


# -- POST /v1/responses/{id}/cancel ----------------------------------------------------------


async def cancel_response(request: web.Request) -> web.StreamResponse:
    """OpenAI cancels a background response that is queued or running. None is here: a
    `background` request is answered at once, its client holding the connection, and a
    client stops a running response by leaving (the run is aborted). So a response known
    here, running or stored, is a 400 that says why; another id is a 404, as for a GET.
    Another client's cancel does not abort a response: OpenAI does not cancel foreground
    responses either."""
    refused = gate(request, ("POST",), responses_enabled)
    if refused is not None:
        return refused
    response_id = request.match_info["response_id"]
    if not is_response_id(response_id):
        return error_answer(request, response_not_found(response_id))
    if response_id not in request.app[RUNNING]:
        store = request.app[STATE].store
        assert store is not None  # open for as long as the app serves requests
        try:
            stored = await store.response_place(response_id)
            if stored is None and await _running_elsewhere(request.app[STATE], response_id):
                return error_answer(request, response_not_cancellable(response_id))
            if stored is None:  # stored, then unmarked, since the first lookup
                stored = await store.response_place(response_id)
        except StoreError as exc:
            log.error("response_lookup_failed", error=str(exc))
            return error_answer(request, error_reply(exc))  # 503 while a shared store is away
        if stored is None:
            return error_answer(request, response_not_found(response_id))
    return error_answer(request, response_not_cancellable(response_id))
