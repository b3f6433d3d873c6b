"""Token exchange, stats and costs, the audit log, keys over the API, health, readiness and
``/metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from keel.core import UserError
from keel.observe import failure_modes
from keel.server._api_runs import ID_PATTERN
from keel.server._auth import Principal
from keel.server._errors import ApiError
from keel.server._keys import ROLES, ApiKey
from keel.server._models import (
    ERRORS,
    AuditPage,
    Costs,
    Failures,
    Health,
    KeyChanged,
    KeyIssued,
    KeyList,
    Ready,
    Token,
)
from keel.server._state import allowed, state
from keel.server._tokens import issue_token
from keel.store import GROUP_KEYS, StatsQuery

router = APIRouter()
_DAY = 86_400.0


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str | None = Field(default=None, max_length=400,
                                description="the key, if not sent as Authorization: Bearer")


@router.post("/v1/auth/token", tags=["auth"], summary="Exchange an API key for a token",
             response_model=Token, responses=ERRORS)
async def token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """The token is signed, names the key's tenant and role, and expires in minutes; send it
    as ``Authorization: Bearer TOKEN`` on every other call."""
    s = state(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    plaintext = (body.api_key if body and body.api_key else
                 value.strip() if scheme.lower() == "bearer" else None)
    key: ApiKey = await s.auth.key_from(request, plaintext)  # type: ignore[assignment]
    issued = issue_token(key, s.auth.secret, ttl_s=s.token_ttl_s, audience=s.auth.audience)
    return {"token": issued, "token_type": "bearer", "expires_in": s.token_ttl_s,
            "tenant": key.tenant, "role": key.role}


def _window(days: float | None, since: float | None,
            until: float | None) -> tuple[float | None, float | None]:
    if days is not None:
        return time.time() - days * _DAY, None
    return since, until


@router.get("/v1/stats", tags=["stats"], summary="Runs, success, latency and cost, grouped",
            responses=ERRORS)
async def stats(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                by: Annotated[str, Query(max_length=60, description="comma-separated: "
                                         + ", ".join(GROUP_KEYS))] = "agent",
                agent: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                days: Annotated[float | None, Query(gt=0, le=3660)] = None,
                since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
                until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
                top: Annotated[int, Query(ge=0, le=20)] = 5) -> dict[str, Any]:
    s = state(request)
    keys = tuple(k.strip() for k in by.split(",") if k.strip())
    begin, end = _window(days, since, until)
    try:
        query = StatsQuery(tenant=who.tenant, agent=agent, since=begin, until=end,
                           by=keys, top=top)  # type: ignore[arg-type]
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    return (await s.store.stats(query)).to_dict()


@router.get("/v1/costs", tags=["stats"], summary="Cost and tokens per day and agent",
            response_model=Costs, responses=ERRORS)
async def costs(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                days: Annotated[float, Query(gt=0, le=3660)] = 30) -> dict[str, Any]:
    s = state(request)
    result = await s.store.stats(StatsQuery(tenant=who.tenant, since=time.time() - days * _DAY,
                                            by=("day", "agent"), top=0))
    rows = [{"day": r.key.get("day"), "agent": r.key.get("agent"), "runs": r.runs,
             "cost_usd": r.cost_usd, "input_tokens": r.input_tokens,
             "output_tokens": r.output_tokens} for r in result.groups]
    return {"tenant": who.tenant, "days": days, "total_usd": result.total.cost_usd,
            "rows": rows}


@router.get("/v1/failures", tags=["stats"],
            summary="The failure-modes report: how runs failed, were blocked or escalated",
            response_model=Failures, responses=ERRORS)
async def failures(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                   agent: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                   version: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                   days: Annotated[float | None, Query(gt=0, le=3660)] = None,
                   since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
    """The top ways the caller's tenant's runs (created in the last ``days``, or since
    ``since``, epoch seconds; of one agent ``version`` if given) failed, were blocked or
    escalated: count, runs, share, first and last seen, example run ids, the versions that
    served them and the mitigation in place, from the journals."""
    s = state(request)
    begin, _ = _window(days, since, None)
    try:
        report = await failure_modes(s.store, since=begin, agent=agent, tenant=who.tenant,
                                     version=version, limit=limit)
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    return report.to_dict()


@router.get("/v1/audit", tags=["audit"], summary="The audit log: who did what, when",
            response_model=AuditPage, responses=ERRORS)
async def audit(request: Request, who: Annotated[Principal, Depends(allowed("admin"))],
                limit: Annotated[int, Query(ge=1, le=500)] = 100,
                before: Annotated[int | None, Query(ge=0, description="entries older than "
                                                   "this entry id (paging)")] = None
                ) -> dict[str, Any]:
    s = state(request)
    entries = await s.keys.read_audit(tenant=who.tenant, limit=limit, before=before)
    return {"entries": [e.to_dict() for e in entries]}


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["viewer", "operator", "reviewer", "admin"]
    name: str = Field(min_length=1, max_length=100)


KeyId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.get("/v1/keys", tags=["keys"], summary="The tenant's API keys (never the secrets)",
            response_model=KeyList, responses=ERRORS)
async def keys(request: Request,
               who: Annotated[Principal, Depends(allowed("admin"))]) -> dict[str, Any]:
    s = state(request)
    return {"keys": [k.to_dict() for k in await s.keys.list_keys(tenant=who.tenant)],
            "roles": list(ROLES)}


@router.post("/v1/keys", tags=["keys"], status_code=201, response_model=KeyIssued,
             responses=ERRORS, summary="Create a key for the tenant (its secret is shown once)")
async def create_key(body: NewKey, request: Request,
                     who: Annotated[Principal, Depends(allowed("admin"))]) -> dict[str, Any]:
    s = state(request)
    record, secret = await s.keys.create_key(who.tenant, body.role, name=body.name,
                                             by=who.who)
    return {"key": record.to_dict(), "api_key": secret}


@router.post("/v1/keys/{key_id}/rotate", tags=["keys"], summary="Rotate a key's secret",
             response_model=KeyIssued, responses=ERRORS)
async def rotate_key(key_id: KeyId, request: Request,
                     who: Annotated[Principal, Depends(allowed("admin"))]) -> dict[str, Any]:
    s = state(request)
    record, secret = await s.keys.rotate_key(key_id, by=who.who, tenant=who.tenant)
    return {"key": record.to_dict(), "api_key": secret}


@router.post("/v1/keys/{key_id}/revoke", tags=["keys"], summary="Revoke a key, at once",
             response_model=KeyChanged, responses=ERRORS)
async def revoke_key(key_id: KeyId, request: Request,
                     who: Annotated[Principal, Depends(allowed("admin"))]) -> dict[str, Any]:
    s = state(request)
    record = await s.keys.revoke_key(key_id, by=who.who, tenant=who.tenant)
    return {"key": record.to_dict()}


@router.get("/v1/health", tags=["health"], summary="Liveness: the process answers",
            response_model=Health)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/ready", tags=["health"], summary="Readiness: the stores answer",
            response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
async def ready(request: Request, response: Response) -> dict[str, Any]:
    s = state(request)
    checks: dict[str, str] = {}
    for name, probe in (("runs", s.store.list_runs()), ("keys", s.keys.list_keys(
            tenant="-readiness-probe-"))):
        try:
            await asyncio.wait_for(probe, 5)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks[name] = type(exc).__name__
    ok = all(v == "ok" for v in checks.values()) and not s.executor.closing
    response.status_code = 200 if ok else 503
    return {"status": "ready" if ok else "not_ready", "checks": checks,
            "shutting_down": s.executor.closing}


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=PlainTextResponse, responses={
                code: {"description": spec["description"], "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
                for code, spec in ERRORS.items()})
async def metrics(request: Request,
                  who: Annotated[Principal, Depends(allowed("admin"))]) -> PlainTextResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from keel.observe import scrape_registry

    body = await asyncio.to_thread(generate_latest, scrape_registry())
    return PlainTextResponse(body.decode(), media_type=CONTENT_TYPE_LATEST)
