"""The providers a registry runs turns with, sharing one upstream client."""

from __future__ import annotations

from agents.config import API_ANTHROPIC_MESSAGES, API_ECHO, API_OPENAI_COMPLETIONS
from agents.providers.anthropic_messages import AnthropicMessagesProvider
from agents.providers.base import Provider
from agents.providers.echo import EchoProvider
from agents.providers.openai_completions import OpenAICompletionsProvider
from agents.providers.timeouts import Timeouts
from agents.providers.upstream_client import UpstreamClient

__all__ = ["ProviderPool", "Timeouts"]

_DEFAULT_TIMEOUTS = Timeouts()


class ProviderPool:
    """Maps an `api` name to its provider; owns the one shared UpstreamClient."""

    def __init__(self, timeouts: Timeouts = _DEFAULT_TIMEOUTS) -> None:
        self.timeouts = timeouts
        self._client: UpstreamClient | None = None
        self._providers: dict[str, Provider] = {API_ECHO: EchoProvider()}

    def get(self, api: str) -> Provider:
        provider = self._providers.get(api)
        if provider is None:
            provider = self._make(api)
            self._providers[api] = provider
        return provider

    def _make(self, api: str) -> Provider:
        if self._client is None:
            self._client = UpstreamClient()
        if api == API_OPENAI_COMPLETIONS:
            return OpenAICompletionsProvider(self._client, self.timeouts)
        if api == API_ANTHROPIC_MESSAGES:
            return AnthropicMessagesProvider(self._client, self.timeouts)
        raise KeyError(api)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._providers = {API_ECHO: EchoProvider()}
