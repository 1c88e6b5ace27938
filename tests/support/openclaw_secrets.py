"""An OpenClaw config with a secret in every place OpenClaw puts one, and clawgate's own.

Every secret contains SECRET_MARK (numbers: their digits), so a test can look for any of them in
any output; every value that must stay visible contains SHOWN_MARK.
"""

from __future__ import annotations

SECRET_MARK = "zq-secret"
SHOWN_MARK = "shown-"
SECRET_NUMBERS = ("918273645", "112358132", "776655443")
ENVIRON = {"OPENAI_API_KEY": "zq-secret-from-environment", "ORG": "zq-secret-org-from-env"}

OPENCLAW_SECRETS = """// every kind of secret OpenClaw keeps in its config
{
  env: {
    OPENROUTER_API_KEY: "zq-secret-env-plain", // plain env.<NAME>
    vars: { GROQ_API_KEY: 'zq-secret-env-vars', RETRIES: 918273645 },
    shellEnv: { enabled: true, timeoutMs: 15000 },
  },
  gateway: {
    auth: {
      mode: "token",
      token: "zq-secret-gateway-token",
      password: 'zq-secret-gateway-password',
      rateLimit: { maxAttempts: 7, exemptLoopback: false },
    },
  },
  channels: {
    telegram: {
      botToken: "zq-secret-telegram-bot", /* BotFather's */
      webhookSecret: "zq-secret-telegram-webhook",
      webhookUrl: "https://shown-hooks.example/telegram",
      keyPrefix: "shown-key-prefix",
    },
    slack: {
      accounts: [
        { name: "shown-work", appToken: "zq-secret-slack-app", signingSecret: 112358132 },
        { name: "shown-home", botToken: "zq-secret-slack-bot", userToken: true },
      ],
    },
    matrix: {
      accessToken: { source: "zq-secret-matrix-source", parts: ["zq-secret-in-array", 776655443] },
    },
    irc: { password: "zq-secret-irc \\"quoted\\" pw", nickname: "shown-nick" },
  },
  models: {
    mode: "merge",
    providers: {
      openai: {
        baseUrl: "https://shown-api.example/v1",
        apiKey: "${OPENAI_API_KEY}",
        headers: { "x-org": "${ORG}", Authorization: "Bearer zq-secret-header-bearer" },
        models: [
          {
            id: "shown-model",
            maxTokens: 4096,
            contextWindow: 128000,
            headers: { "x-model": "zq-secret-model-header" },
          },
        ],
      },
      vertex: {
        api: "google-vertex", // not implemented: ignored, yet still in config.get's raw
        auth: { clientId: "zq-secret-oauth-client", clientSecret: "zq-secret-oauth" },
        apiKey: "zq-secret-vertex-key",
      },
    },
  },
  agents: {
    defaults: { contextTokens: 64000 },
    list: [
      {
        id: "main",
        default: true,
        name: "shown-main",
        params: { api_key: "zq-secret-param-key", user: "shown-user", temperature: 0.5 },
      },
    ],
  },
  session: { mainKey: "shown-home" },
  hooks: { token: "zq-secret-hooks-token", path: "/shown-hooks" },
  tools: {
    web: { search: { provider: "brave", apiKey: "zq-secret-brave" } },
    tokenizer: "shown-tokenizer",
  },
  skills: {
    entries: { "shown-skill": { apiKey: "zq-secret-skill", env: { X: "zq-secret-skill-env" } } },
  },
  talk: { apiKey: "zq-secret-talk" },
  secrets: { providers: { vault: { url: "https://vault.example", roleId: "zq-secret-role" } } },
  auth: {
    profiles: { "openai:default": { provider: "openai", email: "zq-secret-email@example.com" } },
  },
}
"""
