"""The HTTP endpoints: OpenAI-compatible chat completions and models, embeddings, webhooks,
probes. Independent of `gateway.ws`: both stand on auth, config, state, `gateway.jsonwire` and
`gateway.responses` (import-linter checks it)."""
