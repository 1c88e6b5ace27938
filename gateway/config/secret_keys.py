"""Which values of a config file are secrets (redacted when shown) and `${VAR}` references.

One rule for the loader (where `${VAR}` may be expanded), the view (what is redacted) and
config.patch (which secrets may not follow a changed address).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.config.errors import PathKey

REDACTED = "__OPENCLAW_REDACTED__"
# `$${VAR}` is matched too (one leading `$` more) so that it can be turned into a literal `${VAR}`.
ENV_REF_RE = re.compile(r"\$?\$\{([A-Z_][A-Z0-9_]*)\}")

# Which keys hold secrets, by name, anywhere in the file: clawgate's own secrets and those of the
# OpenClaw sections it loads but ignores (`channels.*.botToken`, `env.vars.*`, ...), which
# `config.get` would otherwise hand to any `operator.read` client. The rule, on the key's name
# lowercased with `_`, `-` and `.` removed:
# - it ends in one of _SECRET_SUFFIXES: `token`, `botToken`, `accessToken`, `apiKey`, `api_key`,
#   `clientSecret`, `webhookSecret`, `password`, `privateKey`, `credentials`, `bearer`, `pwd`,
#   `passcode`, `jwt`;
#   but `maxTokens`, `contextTokens` (counts: "tokens" is not a suffix), `tokenizer`,
#   `keyPrefix`, `keyId`, `tokenFile` (the word is not at the end) are settings, shown;
# - and it is not one of _NOT_SECRET, names that end in "key" but name a lookup key
#   (`session.mainKey` is a session key's last part, shown by `sessions.list` anyway);
# - or it is `auth`, `headers` or `env`: every value below them is a secret (provider auth
#   objects, `Authorization` headers, environment variables), except clawgate's own
#   `gateway.auth`, whose settings in _GATEWAY_AUTH_SETTINGS are shown (its secrets `token` and
#   `password` are secrets by name); any other key there is redacted whole.
# Everything below a secret key is a secret: an object or array there is redacted leaf by leaf.
# A name that merely looks secret is redacted too (`hotkey`): showing a harmless value as
# "__OPENCLAW_REDACTED__" costs less than showing a credential, and a redacted value sent back
# in config.patch keeps what the file has.
_SECRET_SUFFIXES = (
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "key",
    "keys",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    # Names a secret also goes by: a bare bearer token, a short password, a PIN-like code.
    "bearer",
    "pwd",
    "passcode",
    "jwt",
)
_NOT_SECRET = frozenset(
    {"mainkey", "sessionkey", "idempotencykey", "dedupekey", "sortkey", "groupkey", "cachekey"}
    # `hooks.defaultSessionKey`: the session webhooks run in, which `sessions.list` shows anyway.
    | {"defaultsessionkey"}
    # `hooks.allowRequestSessionKey`: a switch, not a key.
    | {"allowrequestsessionkey"}
)
_SECRET_SECTIONS = frozenset({"auth", "headers", "env"})
_GATEWAY_AUTH_SETTINGS = frozenset({"mode", "rateLimit", "allowTailscale", "trustedProxy"})
NAME_SEPARATORS = str.maketrans("", "", "_-.")


def is_secret_name(key: str) -> bool:
    name = key.lower().translate(NAME_SEPARATORS)
    return name not in _NOT_SECRET and name.endswith(_SECRET_SUFFIXES)


def is_secret_path(path: tuple[PathKey, ...]) -> bool:
    """Whether the value at `path` (or any value inside it) is a secret."""
    if path[:2] == ("gateway", "auth"):
        if len(path) == 2:
            return False
        if path[2] not in _GATEWAY_AUTH_SETTINGS:
            return True
        path = path[3:]  # mode and the limiter's settings: only a secret-named key inside
    return any(
        isinstance(key, str) and (key.lower() in _SECRET_SECTIONS or is_secret_name(key))
        for key in path
    )


# An HTTP header's name: RFC 9110's token.
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def hidden_key(path: tuple[PathKey, ...], key: PathKey) -> bool:
    """Whether `key`, of the object at `path`, is itself a secret: a name under `headers`
    that is no header name, such as a whole `Authorization: Bearer sk-…` written as the name
    (an issue, but `config.get` shows the file as it is); and anywhere, a name that holds a
    secret as a value would (a URL with credentials, `api_key=sk-…`) or a secret's name with
    its value (`token: …`, `Bearer …`), which a provider's or an agent's free-form params may
    have as keys."""
    if not isinstance(key, str):
        return False
    if path and isinstance(path[-1], str) and path[-1].lower() == "headers":
        return HEADER_NAME_RE.fullmatch(key) is None
    return holds_password(key) or _secret_with_its_value(key)


# A secret's name, then `:` or `=`, then a value (`token: abc`, `api_key=sk-…`), or an auth
# scheme, then a space and its credentials (`Bearer sk-…`). Words after a secret's name with
# only a space between (`token budget`, `secret sauce`) are a name, shown.
_NAME_AND_VALUE = re.compile(r"\s*([^\s:=]+)\s*[:=]\s*\S")
_SCHEME_AND_VALUE = re.compile(r"\s*(?:bearer|basic)\s+\S", re.IGNORECASE)


def _secret_with_its_value(key: str) -> bool:
    match = _NAME_AND_VALUE.match(key)
    return (match is not None and is_secret_name(match[1])) or (
        _SCHEME_AND_VALUE.match(key) is not None
    )


_MARKER_NAME = re.compile(re.escape(REDACTED) + r"(?:[2-9]|[1-9][0-9]+)?")


def is_marker_name(key: PathKey) -> bool:
    """REDACTED, or a hidden key's numbered one (`__OPENCLAW_REDACTED__2`): never a real key."""
    return isinstance(key, str) and _MARKER_NAME.fullmatch(key) is not None


def shown_names(path: tuple[PathKey, ...], value: Mapping[Any, Any]) -> dict[Any, Any]:
    """The name each key of the object `value` at `path` is shown by: itself, or for a hidden
    key REDACTED, numbered from the second (`__OPENCLAW_REDACTED__2`), a key being unique.
    config.patch maps them back to the file's keys with the same numbering. A number is
    skipped where a key the file shows (a hand-written `__OPENCLAW_REDACTED__2`) has that name."""
    hidden = {key for key in value if hidden_key(path, key)}
    names: dict[Any, Any] = {key: key for key in value if key not in hidden}
    taken: set[Any] = set(names)
    n = 1
    for key in value:
        if key in hidden:
            while (name := REDACTED if n == 1 else f"{REDACTED}{n}") in taken:
                n += 1
            names[key] = name
            taken.add(name)
    return {key: names[key] for key in value}


def is_secret_file_path(path: tuple[PathKey, ...]) -> bool:
    """Whether the value at `path` names the file a secret is read from (`store.passwordFile`):
    the path itself is shown, but its secret must not follow a changed address (patch.py)."""
    key = path[-1] if path else None
    if not isinstance(key, str):
        return False
    name = key.lower().translate(NAME_SEPARATORS)
    return name.endswith("file") and is_secret_name(name.removesuffix("file"))


def is_secret_value(value: Any) -> bool:
    # Any scalar: a number or boolean where a secret belongs is invalid, yet may be the secret.
    # null says nothing, and stays.
    return isinstance(value, str | int | float)


# A URL with credentials in it (`https://user:pass@proxy`, `https://<token>@host`) is a secret
# whatever its key: the whole string is redacted, a `baseUrl` included. The scheme is tried
# once per run of scheme characters, from the run's first letter: tried from each letter, a run
# of 300,000 (a base64 blob in a system prompt) took a minute and more.
_URL_WITH_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@"
)


# So is a URL with a query parameter named like a secret (`?key=`, `?access_token=`, libpq's
# `?password=`) or a signature (Azure's SAS `sig`, S3's and GCS's presigned URLs, an Azure
# Function's `code`): the parameter names after the first `://`, each read once.
_QUERY_PARAMETER = re.compile(r"[?&;]([A-Za-z0-9_.+-]+)=")
_SIGNATURE_PARAMETERS = frozenset({"sig", "signature", "xamzsignature", "xgoogsignature", "code"})

# And a URL whose path is the credential, with or without its scheme: a Slack incoming
# webhook (`hooks.slack.com/services/T…/B…/<secret>`, workflows and triggers alike), a
# Discord webhook (`…/api/webhooks/<id>/<token>`, any version and host: discordapp.com,
# ptb., canary.), a Telegram bot's API root (`…/bot<id>:<token>/`, on a local Bot API
# server too), a Microsoft Teams, Zapier or IFTTT (`…/with/key/<key>`) webhook, and a
# Mattermost one (`/hooks/<26-character id>`). Each starts with a literal, so a search is one pass.
SECRET_IN_PATH = re.compile(
    r"hooks\.slack\.com/(?:services|workflows|triggers)/[^\s]"
    r"|/api/(?:v\d+/)?webhooks/\d+/[^\s/?#]"
    r"|/bot\d+:[A-Za-z0-9_-]"
    r"|\.webhook\.office\.com/webhookb2/[^\s]"
    r"|hooks\.zapier\.com/hooks/catch/[^\s]"
    r"|/with/key/[^\s/?#]"
    r"|/hooks/[a-z0-9]{26}(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def is_secret_query_parameter(name: str) -> bool:
    return is_secret_name(name) or name.lower().translate(NAME_SEPARATORS) in _SIGNATURE_PARAMETERS


# And a connection string of keyword=value pairs (libpq's `host=db password=…`, ADO.NET's and
# ODBC's `Server=…;Pwd=…`, Azure Storage's `…;AccountKey=…`) with a pair named like a secret.
# Only a string that starts with a pair is one: a system prompt that mentions `key=value` is not.
_CONNECTION_STRING_START = re.compile(r"\s*[A-Za-z][\w.-]*\s*=")
_CONNECTION_PAIR = re.compile(r"(?<![^\s;])([A-Za-z][\w.-]*)\s*=")


def _connection_string_secret(value: str) -> bool:
    return _CONNECTION_STRING_START.match(value) is not None and any(
        name.lower() == "pwd" or is_secret_query_parameter(name)
        for name in _CONNECTION_PAIR.findall(value)
    )


def holds_password(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if _URL_WITH_PASSWORD.search(value) is not None or SECRET_IN_PATH.search(value) is not None:
        return True
    if "=" in value and _connection_string_secret(value):
        return True
    start = value.find("://")
    return start >= 0 and any(
        is_secret_query_parameter(match[1]) for match in _QUERY_PARAMETER.finditer(value, start)
    )


def is_postgres_url(url: str) -> bool:
    """A server by its address (`postgresql://db.internal:5432/clawgate`), or one on this
    host by its Unix socket's directory, as libpq writes it
    (`postgresql:///clawgate?host=/run/postgresql`): no TCP, no network exposure."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            return False
        sockets = parse_qs(parts.query).get("host", [])
        _ = parts.port  # raises ValueError for a port above 65535
        return bool(parts.hostname) or any(path.startswith("/") for path in sockets)
    except ValueError:  # e.g. an unbalanced `[` in the host, port 99999
        return False


STORE_URL = ("store", "url")


def _unparsed_store_url(path: tuple[PathKey, ...], value: Any) -> bool:
    """`store.url` as the file has it, when it is no URL the loader takes (the file is then
    invalid): a database's address is where its password is written most often, and in a
    mistyped URL (`postgresql//user:pw@db`, no scheme at all) holds_password cannot find it.
    A `${VAR}` alone names the URL, and is shown."""
    return (
        path == STORE_URL
        and is_secret_value(value)
        and not (isinstance(value, str) and (is_postgres_url(value) or _only_env_ref(value)))
    )


def _only_env_ref(text: str) -> bool:
    match = ENV_REF_RE.fullmatch(text)
    return match is not None and not text.startswith("$$")


def is_secret_leaf(path: tuple[PathKey, ...], value: Any) -> bool:
    return (
        (is_secret_path(path) and is_secret_value(value))
        or holds_password(value)
        or _unparsed_store_url(path, value)
    )


def has_env_reference(text: str) -> bool:
    return any(not m[0].startswith("$$") for m in ENV_REF_RE.finditer(text))
