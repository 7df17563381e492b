"""Bearer tokens for the webhook and the operator endpoints."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from pydantic import SecretStr


def bearer_ok(request: web.Request, token: SecretStr) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    # Constant-time comparison: the token must not leak through response timing. aiohttp decodes header bytes that
    # are not UTF-8 with surrogateescape: encoding them back the same way compares the bytes the client sent (a
    # plain encode() would raise on them, a 500 instead of a 401).
    presented_bytes = presented.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented_bytes, token.get_secret_value().encode("utf-8", "surrogateescape"))


def is_loopback(request: web.Request) -> bool:
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def operator_allowed(request: web.Request, api_token: SecretStr | None) -> tuple[bool, str]:
    """With ``API_TOKEN`` set, a matching bearer token; without it, loopback callers only."""
    if api_token is not None:
        return (True, "") if bearer_ok(request, api_token) else (False, "missing or wrong bearer token")
    if is_loopback(request):
        return True, ""
    return False, "operator endpoints accept loopback callers only while API_TOKEN is unset"
