"""Client tool calls of HTTP runs as WebSocket clients see them: `agent` events on the
`tool` stream (OpenClaw's shape), the `chat` final message, and `chat.history`."""

from __future__ import annotations

from typing import Any

from tests.support.ws_client import TOKEN, Gateway, GatewayWs

CHAT = "/v1/chat/completions"
WEATHER = {"type": "function", "function": {"name": "get_weather"}}
ASK = 'call get_weather {"city": "Paris"}'
CALL = {
    "id": "call_echo_1_0",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


async def post(gateway: Gateway, messages: list[dict[str, Any]]) -> dict[str, Any]:
    response = await gateway.client.post(
        CHAT,
        json={"model": "openclaw", "user": "tools", "messages": messages, "tools": [WEATHER]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def tool_loop(gateway: Gateway) -> None:
    await post(gateway, [{"role": "user", "content": ASK}])
    await post(
        gateway,
        [
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_echo_1_0", "content": "sunny"},
        ],
    )


def tool_data(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        f["payload"]["data"]
        for f in frames
        if f.get("event") == "agent" and f["payload"]["stream"] == "tool"
    ]


class TestToolEvents:
    async def test_agent_events_carry_the_call_and_its_result(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        await tool_loop(gateway)
        await ws.event("chat", state="final", stopReason="stop")
        data = tool_data(ws.frames)
        assert data[0] == {
            "phase": "start",
            "name": "get_weather",
            "toolCallId": "call_echo_1_0",
            "index": 0,
        }
        updates = [d for d in data if d["phase"] == "update"]
        assert "".join(d["delta"] for d in updates) == '{"city":"Paris"}'
        assert data[-1] == {
            "phase": "result",
            "name": "get_weather",
            "toolCallId": "call_echo_1_0",
            "isError": False,
            "result": "sunny",
        }

    async def test_the_chat_final_of_a_call_carries_it(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        await post(gateway, [{"role": "user", "content": ASK}])
        final = await ws.event("chat", state="final")
        assert final["payload"]["stopReason"] == "tool_calls"
        assert final["payload"]["message"]["content"] == [
            {
                "type": "toolCall",
                "id": "call_echo_1_0",
                "name": "get_weather",
                "arguments": {"city": "Paris"},
            }
        ]

    async def test_chat_history_shows_calls_and_results(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        await tool_loop(gateway)
        history = await ws.ok("chat.history", {"sessionKey": "openai-user:tools"})
        messages = history["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "toolResult", "assistant"]
        assert messages[1]["content"] == [
            {
                "type": "toolCall",
                "id": "call_echo_1_0",
                "name": "get_weather",
                "arguments": {"city": "Paris"},
            }
        ]
        assert messages[1]["stopReason"] == "toolUse"
        result = {k: v for k, v in messages[2].items() if k not in ("timestamp", "__openclaw")}
        assert result == {
            "role": "toolResult",
            "toolCallId": "call_echo_1_0",
            "toolName": "get_weather",
            "content": [{"type": "text", "text": "sunny"}],
            "isError": False,
        }
        assert messages[3]["content"] == [{"type": "text", "text": "[turn 1] get_weather: sunny"}]
