"""The gateway's configuration (config.md), one concept per module.

- model: the config as frozen values (`Config` and its sections); all most code needs.
- errors: `ConfigIssue` at a dotted path, `ConfigError` carrying all of a load's issues.
- secret_keys: which keys and values are secrets; `${VAR}` references.
- schema: the schema of §4/§4a and the validating walk, with did-you-mean.
- overrides: the CLI flags and environment over the file, the auth in force, startup guards.
- loader: `ConfigLoader`: find, read and parse the JSON5 file, then schema, overrides, guards.
- view: the effective config and its redacted views (`config.get`, `config show`).
- patch: `config.patch`'s merge, base hash, kept secrets and atomic write.
- apply: swapping a new config into the running gateway (hot reload, `config.patch`).

Nothing is re-exported here: import from the submodule, so that a module needing only the
model does not load the loader and the schema.
"""
