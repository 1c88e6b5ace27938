"""What the tests share: one module per helper concept, imported by tests and by the fixtures
in the conftest.py files (which declare fixtures and nothing else).

process      a real `clawgate` subprocess and the CLI, in a clean environment
configs      configs loaded the way the CLI loads them; settings merged over defaults
upstreams    fake model upstreams (OpenAI, Anthropic) on loopback
scripted     scripted providers and a registry harness for the agents layer
http_client  the gateway under aiohttp's test client, for the OpenAI-compatible surface
raw_http     requests a polite client will not send, over a bare socket
ws_client    a WebSocket client that keeps every frame, and a gateway to open it on
served       a gateway served as `clawgate run` serves it, with its production logging
spec_checks  the checks that say a response is one the spec documents
strategies   hypothesis strategies for the fuzz tests
openclaw_secrets  an OpenClaw config with a secret in every place
browser      the Control UI page as a Selenium test sees it
"""
