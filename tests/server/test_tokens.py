"""Signed tokens (keel.server.issue_token / read_token / check_token): what a valid token
says, and every way a token is refused (expired, wrong audience, bad signature, tampered,
alg none, garbage, missing or ill-typed claims), without quoting it."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from keel.core import UserError
from keel.server import (
    MAX_TTL_S,
    ApiKey,
    AuthError,
    Claims,
    KeyStore,
    check_token,
    issue_token,
    read_token,
)

SECRET = b"s" * 32
KEY = ApiKey(key_id="0123456789abcdef", tenant="acme", role="operator", name="bot",
             created_at=0.0, created_by="alice", generation=3)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": KEY.key_id, "tenant": "acme", "role": "operator", "gen": 3,
              "aud": "keel", "iat": now, "exp": now + 60, "jti": "j1"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


def _refused(token: Any, reason: str, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        read_token(token, kw.pop("secret", SECRET), **kw)
    assert caught.value.reason == reason, caught.value
    if isinstance(token, str) and len(token) > 8:
        assert token not in str(caught.value)
        for part in token.split("."):
            assert len(part) < 8 or part not in str(caught.value)
    return caught.value


def test_a_token_names_its_key_tenant_role_and_generation() -> None:
    now = time.time()
    token = issue_token(KEY, SECRET, ttl_s=120, now=now)
    claims = read_token(token, SECRET)
    assert claims == Claims(key_id=KEY.key_id, tenant="acme", role="operator",
                            exp=int(now) + 120, jti=claims.jti, generation=3,
                            issued_at=int(now))
    header = json.loads(_unb64(token.split(".")[0]))
    assert header["alg"] == "HS256"
    payload = json.loads(_unb64(token.split(".")[1]))
    assert set(payload) == {"sub", "tenant", "role", "gen", "aud", "iat", "exp", "jti"}
    assert issue_token(KEY, SECRET, now=now) != issue_token(KEY, SECRET, now=now)  # jti


def test_expired_tokens_are_refused_with_leeway_for_skew() -> None:
    now = time.time()
    _refused(issue_token(KEY, SECRET, ttl_s=60, now=now - 120), "expired")
    barely = issue_token(KEY, SECRET, ttl_s=60, now=now - 62)  # expired 2 s ago
    assert read_token(barely, SECRET, leeway_s=5).key_id == KEY.key_id
    _refused(barely, "expired", leeway_s=0)
    future = issue_token(KEY, SECRET, now=now + 600)  # issued in the future
    _refused(future, "claims")


def test_audience_signature_and_tampering() -> None:
    token = issue_token(KEY, SECRET)
    _refused(token, "audience", audience="other-service")
    _refused(issue_token(KEY, SECRET, audience="other-service"), "audience")
    _refused(token, "signature", secret=b"t" * 32)
    head, body, sig = token.split(".")
    payload = json.loads(_unb64(body))
    for change in ({"role": "admin"}, {"tenant": "globex"}, {"exp": payload["exp"] + 9999},
                   {"gen": 4}):
        forged = _b64(json.dumps({**payload, **change}).encode())
        _refused(f"{head}.{forged}.{sig}", "signature")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    _refused(f"{head}.{body}.{flipped}", "signature")
    listed = jwt.encode(_claims(aud=["keel", "other"]), SECRET, algorithm="HS256")
    _refused(listed, "audience")


def test_alg_none_and_other_algorithms_are_refused() -> None:
    body = _b64(json.dumps(_claims()).encode())
    for alg in ("none", "None", "NONE"):
        head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        _refused(f"{head}.{body}.", "malformed")
        _refused(f"{head}.{body}", "malformed")
    hs512 = jwt.encode(_claims(), SECRET * 2, algorithm="HS512")
    _refused(hs512, "malformed", secret=SECRET * 2)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....", "x" * 5000,
                                   "eyJhbGciOiJIUzI1NiJ9.e30.", "\x00\x01", "é.é.é"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(AuthError) as caught:
        read_token(token, SECRET)
    assert caught.value.reason in ("malformed", "signature")


def test_non_strings_are_refused() -> None:
    for token in (None, 7, b"abc"):
        _refused(token, "malformed")


@pytest.mark.parametrize("changes", [
    {"sub": ...}, {"tenant": ...}, {"role": ...}, {"gen": ...}, {"jti": ...}, {"exp": ...},
    {"iat": ...}, {"aud": ...},
])
def test_missing_claims_are_refused(changes: dict[str, Any]) -> None:
    token = jwt.encode(_claims(**changes), SECRET, algorithm="HS256")
    _refused(token, "claims")


@pytest.mark.parametrize("changes", [
    {"role": "root"}, {"role": ["admin"]}, {"sub": 5}, {"sub": "not-a-key-id"},
    {"tenant": ""}, {"tenant": 3}, {"tenant": "a\nb"}, {"gen": "3"}, {"gen": True},
    {"jti": 1}, {"jti": ""}, {"iat": "now"},
])
def test_ill_typed_claims_are_refused(changes: dict[str, Any]) -> None:
    token = jwt.encode(_claims(**changes), SECRET, algorithm="HS256")
    _refused(token, "claims")


def test_issuing_is_bounded() -> None:
    assert read_token(issue_token(KEY, SECRET, ttl_s=MAX_TTL_S), SECRET)
    for ttl in (0, -1, MAX_TTL_S + 1, True, 1.5, "60"):
        with pytest.raises(UserError, match="ttl_s"):
            issue_token(KEY, SECRET, ttl_s=ttl)  # type: ignore[arg-type]
    for secret in (b"short", "s" * 32, None):
        with pytest.raises(UserError, match="at least 32 bytes"):
            issue_token(KEY, secret)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="at least 32 bytes"):
            read_token("x.y.z", secret)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="audience"):
        issue_token(KEY, SECRET, audience="")
    revoked = ApiKey(key_id=KEY.key_id, tenant="acme", role="viewer", name="n",
                     created_at=0.0, created_by="a", revoked_at=1.0, revoked_by="b")
    with pytest.raises(AuthError, match="revoked"):
        issue_token(revoked, SECRET)


@pytest.fixture(params=["sqlite", "memory"])
async def keys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    url = ":memory:" if request.param == "memory" else str(tmp_path / "runs.db")
    async with KeyStore(url) as store:
        yield store


async def test_check_token_refuses_the_tokens_of_revoked_and_rotated_keys(
        keys: KeyStore) -> None:
    key, plaintext = await keys.create_key("acme", "reviewer", name="desk", by="alice")
    secret = await keys.signing_secret()
    token = issue_token(await keys.verify(plaintext), secret)
    claims = await check_token(token, keys)
    assert (claims.key_id, claims.tenant, claims.role) == (key.key_id, "acme", "reviewer")
    rotated, new = await keys.rotate_key(key.key_id, by="bob")
    with pytest.raises(AuthError, match="revoked or rotated") as caught:
        await check_token(token, keys)
    assert caught.value.reason == "revoked"
    fresh = issue_token(await keys.verify(new), secret)
    assert (await check_token(fresh, keys)).generation == rotated.generation == 2
    await keys.revoke_key(key.key_id, by="bob")
    with pytest.raises(AuthError):
        await check_token(fresh, keys)
    other = issue_token(rotated, b"x" * 32)
    with pytest.raises(AuthError) as caught:
        await check_token(other, keys)  # signed with another secret than the store's
    assert caught.value.reason == "signature"


async def test_check_token_with_the_callers_secret(keys: KeyStore) -> None:
    key, plaintext = await keys.create_key("acme", "viewer", name="v", by="a")
    mine = b"k" * 48
    token = issue_token(await keys.verify(plaintext), mine)
    assert (await check_token(token, keys, secret=mine)).key_id == key.key_id
    with pytest.raises(AuthError):
        await check_token(token, keys)


def test_without_pyjwt_tokens_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(UserError, match=r"keel-agents\[server\]"):
        issue_token(KEY, SECRET)
    with pytest.raises(UserError, match=r"keel-agents\[server\]"):
        read_token("x.y.z", SECRET)
