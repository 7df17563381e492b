"""Secrets never reach a log line: a structlog processor that redacts them wherever they appear.

Three rules, applied to every event (its text, every value, nested dicts and lists at any depth, exception text):

- the value of a key that names a secret (``token``, ``secret``, ``password``, ``authorization``, ``api_key``,
  ``routing_key``, ``signing_secret``, ``X-Slack-Signature``...) is replaced whole;
- the process's configured secrets (every ``SecretStr`` of :class:`config.settings.Settings`: ``SLACK_BOT_TOKEN``,
  ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``, ``WEBHOOK_TOKEN``, ``API_TOKEN``, ``OPENAI_API_KEY``,
  ``PAGERDUTY_ROUTING_KEY``) are cut out of any text they appear in, as is and URL- or JSON-escaped;
- well-known credential shapes are cut out of any text: Slack tokens (``xoxb-``, ``xoxp-``, ``xapp-``...), OpenAI
  keys (``sk-...``), JWTs, ``Bearer``/``Basic`` credentials, a URL's password, Slack webhook and response URLs.

The processor runs among the shared processors (so library logs, rendered through the ProcessorFormatter, are
covered too) and once more after ``format_exc_info``, because a traceback is text only from there on.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

if TYPE_CHECKING:
    from config.settings import Settings

REDACTED = "[REDACTED]"
# A configured secret shorter than this is not searched for inside text: it would blot out ordinary words, and a
# credential that short is guessable anyway. Keys and credential shapes still apply to it.
MIN_SECRET_LENGTH = 4
MAX_DEPTH = 32

# Words that make a key name a secret, once the key is split into words ("X-Api-Key", "slackBotToken" and
# "openai_api_key" alike). Whole words: "tokens_used" or "max_tokens" is a count, not a credential.
SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "auth",
        "signature",
        "signing",
        "credential",
        "credentials",
        "cookie",
        "apikey",
        "bearer",
        "dsn",
    }
)
SECRET_PAIRS = frozenset({("api", "key"), ("routing", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
# structlog's own bookkeeping, and the exception before format_exc_info renders it (it is redacted as text after).
_UNTOUCHED_KEYS = frozenset({"_record", "_from_structlog", "exc_info"})

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

# Credential shapes, each group keeping what stays readable ("Bearer ", "https://user:", "hooks.slack.com/").
_SHAPES = [
    r"\b(?:xox[abeoprs]|xapp)-[0-9A-Za-z-]+",  # Slack bot, user, app-level, refresh tokens
    r"\bsk-[A-Za-z0-9_-]{16,}",  # OpenAI (and compatible) API keys: sk-..., sk-proj-...
    r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",  # JWTs
    # An Authorization header's credentials (8 characters at least: "a bearer token" is prose, not a credential).
    r"(?P<scheme>\b(?i:bearer|basic)\s+)[^\s,;\"'<>]{8,}",
    r"(?P<userinfo>://[^/\s:@\"']+:)[^/\s@\"']+(?=@)",  # the password of https://user:password@host
    r"(?P<hook>\bhooks\.slack(?:-gov)?\.com/)[^\s\"'<>]+",  # Slack webhook and response_url paths: bearer URLs
]


@functools.lru_cache(maxsize=4096)  # a process logs the same few hundred keys over and over
def is_secret_key(key: str) -> bool:
    """Whether a key names a secret: one of its words is a secret word, or two adjacent ones a secret pair."""
    words = [word for word in _NOT_ALNUM.split(_CAMEL.sub(r"\1_\2", key).lower()) if word]
    if any(word in SECRET_WORDS for word in words):
        return True
    return any(pair in SECRET_PAIRS for pair in itertools.pairwise(words))


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret of ``settings`` (its ``SecretStr`` fields that are set)."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value().strip():
            values.append(value.get_secret_value())
    return values


def _spellings(secret: str) -> set[str]:
    """How a secret may appear in text: as is, trimmed, URL-encoded (a query string), JSON- or repr-escaped."""
    spellings = {secret, secret.strip(), quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    spellings.add(repr(secret)[1:-1])
    return {spelling for spelling in spellings if len(spelling) >= MIN_SECRET_LENGTH}


class SecretRedactor:
    """The structlog processor; ``redact_text`` and ``redact`` are usable on their own."""

    def __init__(self, secrets: Iterable[str | SecretStr | None] = ()) -> None:
        spellings: set[str] = set()
        for secret in secrets:
            raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            if raw and raw.strip():
                spellings |= _spellings(raw)
        # Longest first: a secret that contains another is cut out whole.
        known = "|".join(re.escape(spelling) for spelling in sorted(spellings, key=len, reverse=True))
        alternatives = ([f"(?P<known>{known})"] if known else []) + _SHAPES
        self._pattern = re.compile("|".join(f"(?:{alternative})" for alternative in alternatives))

    def redact_text(self, text: str) -> str:
        return self._pattern.sub(_replacement, text)

    def redact(self, value: Any, depth: int = 0) -> Any:
        """``value`` with every secret in it redacted; unchanged values are returned as they are (same object)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if depth >= MAX_DEPTH:
            return self.redact_text(_text_of(value))
        if isinstance(value, Mapping):
            return {self.redact(key, depth + 1): self._value_of(key, item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            items = [self.redact(item, depth + 1) for item in value]
            return items if isinstance(value, list | set | frozenset) else tuple(items)
        # Anything else is rendered by repr (JSON) or str (console): redacted as that text when it holds a secret.
        text = _text_of(value)
        redacted = self.redact_text(text)
        return value if redacted == text else redacted

    def _value_of(self, key: Any, value: Any, depth: int) -> Any:
        if isinstance(key, str) and is_secret_key(key) and value is not None and not isinstance(value, bool):
            return REDACTED
        return self.redact(value, depth)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if key not in _UNTOUCHED_KEYS:
                event_dict[key] = self._value_of(key, value, 0) if key != "event" else self.redact(value)
        return event_dict


def _replacement(match: re.Match[str]) -> str:
    kept = match.group("scheme") or match.group("userinfo") or match.group("hook")
    return (kept or "") + REDACTED


def _text_of(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the log line
        return f"<{type(value).__name__} with a failing repr>"
