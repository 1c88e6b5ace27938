"""The OpenClaw WebSocket control protocol on the gateway's port (ws-protocol.md).

`handler.setup(app)` wires it into the application. This package init imports nothing, so
that `gateway.appkeys` can name `WsState` without an import cycle.
"""
