"""The web console (``/console``) and the chat page (``/chat``), served by the API's process.

Pages are rendered on the server (Jinja2, autoescaped) from the same calls the JSON API
makes, with the signed-in principal's tenant; the live parts are small scripts in
``static/`` that read the API (``EventSource`` on ``/v1/runs/{id}/events``, ``fetch`` with
the ``X-CSRF-Token`` header for decisions). The strict Content-Security-Policy holds: no
inline script or style anywhere. Sessions: see :mod:`keel.server._console_session`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from keel.core import UserError
from keel.server import _api_chat as chat
from keel.server import _api_humans as humans
from keel.server import _api_ops as ops
from keel.server import _api_runs as runs
from keel.server._auth import Action, Principal
from keel.server._console_charts import Chart, bar_chart, line_chart
from keel.server._console_session import (
    clear_session,
    login_redirect,
    renew,
    safe_next,
    same_origin,
    set_session,
    start_session,
)
from keel.server._errors import ApiError
from keel.server._keys import AuthError, allows
from keel.server._state import state
from keel.server._tokens import read_token

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.ChainableUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_STATUSES = ("running", "suspended", "completed", "failed", "cancelled")
_PAGE = 25

router = APIRouter(include_in_schema=False)
Context = dict[str, Any]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(epoch: float | None) -> str:
    return "" if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


_env.filters.update(when=_when, iso=_iso, pretty=_pretty)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    s = state(request)
    who: Principal | None = context.get("who")
    context.setdefault("title", s.title)
    context.setdefault("app_title", s.title)
    context.setdefault("path", request.url.path)
    if who is not None:
        context["can"] = {a: allows(who.role, a) for a in ("read", "run", "decide", "admin",
                                                            "chat")}
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status)


async def page(request: Request, template: str, build: Callable[[Principal], Awaitable[Context]],
               *, action: Action = "read") -> Response:
    """A console page: the session's principal (else the login form), ``build``'s context
    rendered, the session renewed; an API refusal becomes an error page with its status."""
    try:
        who = await state(request).auth.principal(request, None)
    except ApiError as exc:
        if exc.status == 401:
            return login_redirect(request)
        return render(request, "error.html", exc.status, message=exc.message, who=None,
                      title="Not available")
    if not allows(who.role, action):
        return render(request, "error.html", 403, who=who, title="Not allowed",
                      message=f"Your role ({who.role}) may not use this page.")
    try:
        context = await build(who)
    except ApiError as exc:
        return render(request, "error.html", exc.status, message=exc.message, who=who,
                      title="Not available")
    response = render(request, template, who=who, **context)
    await renew(request, who, response)
    return response


# ---------------------------------------------------------------------------- sign in/out


@router.get("/console/login")
async def login_form(request: Request,
                     next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return render(request, "login.html", next=safe_next(next), error=None, who=None)


@router.post("/console/login")
async def login(request: Request, api_key: Annotated[str, Form(max_length=400)] = "",
                next: Annotated[str, Form(max_length=500)] = "/console") -> Response:
    target = safe_next(next)
    if not same_origin(request):
        return render(request, "login.html", 403, next=target, who=None,
                      error="This form must be sent from this site.")
    try:
        key = await state(request).auth.key_from(request, api_key.strip() or None)
    except ApiError as exc:
        message = ("Too many attempts; wait a moment and try again." if exc.status == 429
                   else "That API key was not accepted: it is unknown, revoked or rotated.")
        return render(request, "login.html", exc.status, next=target, who=None, error=message)
    response = RedirectResponse(target, status_code=303)
    await start_session(request, response, key)
    return response


@router.post("/console/logout")
async def logout(request: Request,
                 to: Annotated[str | None, Query(max_length=10)] = None) -> Response:
    if not same_origin(request):
        return render(request, "error.html", 403, who=None,
                      message="Signing out must be done from this site.")
    back = "/chat/login" if to == "chat" else "/console/login"  # a customer's own form
    response = RedirectResponse(back, status_code=303)
    clear_session(response)
    return response


@router.get("/console/session")
async def session_check(request: Request) -> Response:
    """Whether the session stands, renewing it like a page does: an open page asks every
    minute, so a reviewer who keeps one page open for an hour stays signed in while the
    key is active, and is told at once when it is not."""
    try:
        who = await state(request).auth.principal(request, None)
    except ApiError as exc:
        return JSONResponse({"signed_in": False, "message": exc.message},
                            status_code=exc.status)
    response = JSONResponse({"signed_in": True, "tenant": who.tenant, "role": who.role})
    await renew(request, who, response)
    return response


# ------------------------------------------------------------------------------ dashboard


@router.get("/console")
async def dashboard(request: Request) -> Response:
    async def build(who: Principal) -> Context:
        daily = await ops.stats(request, who, by="day", agent=None, days=14, since=None,
                                until=None, top=5)
        agents = await ops.stats(request, who, by="agent", agent=None, days=14, since=None,
                                 until=None, top=0)
        costs = await ops.costs(request, who, days=14)
        return {"title": "Dashboard", "charts": charts(daily, costs, agents),
                "total": daily["total"], "agents": agents["groups"],
                "failing": daily["total"].get("failing_tools", [])}

    return await page(request, "dashboard.html", build)


def charts(daily: dict[str, Any], costs: dict[str, Any],
           per_agent: dict[str, Any] | None = None) -> list[Chart]:
    """The dashboard's plots from ``/v1/stats?by=day``, ``/v1/costs`` and (latency by
    agent, when there are several) ``/v1/stats?by=agent``."""
    groups = sorted(daily["groups"], key=lambda g: str(g["key"].get("day")))
    days = [str(g["key"].get("day"))[5:] for g in groups]
    out = [
        bar_chart("runs", "Runs per day", "", days,
                  {"runs": [float(g["runs"]) for g in groups]}),
        line_chart("success", "Success rate per day", "%", days,
                   {"success": [float(g.get("success_rate") or 0) for g in groups]}),
        line_chart("latency", "Latency per day (p50, p95, p99)", "s", days,
                   {p: [float(g.get(f"{p}_s") or 0) for g in groups]
                    for p in ("p50", "p95", "p99")}),
    ]
    cost_days = sorted({str(r["day"]) for r in costs["rows"]})
    names = sorted({str(r["agent"]) for r in costs["rows"]})
    series = {a: [0.0] * len(cost_days) for a in names}
    for r in costs["rows"]:
        series[str(r["agent"])][cost_days.index(str(r["day"]))] += float(r["cost_usd"] or 0)
    out.append(bar_chart("cost", "Cost per day by agent (USD)", "$",
                         [d[5:] for d in cost_days], series))
    by_agent = (per_agent or {}).get("groups") or []
    if len(by_agent) > 1:
        out.append(line_chart("latency-agent", "Latency by agent (p50, p95, p99)", "s",
                              [str(g["key"].get("agent")) for g in by_agent],
                              {p: [float(g.get(f"{p}_s") or 0) for g in by_agent]
                               for p in ("p50", "p95", "p99")}))
    failing = daily["total"].get("failing_tools") or []
    if failing:
        out.append(bar_chart("failing", "Top failing tools", "",
                             [str(f["tool"]) for f in failing],
                             {"failures": [float(f["failures"]) for f in failing]}))
    return out


# ----------------------------------------------------------------------------------- runs


@router.get("/console/runs")
async def runs_page(request: Request,
                    status: Annotated[str | None, Query(max_length=20)] = None,
                    agent: Annotated[str | None, Query(max_length=200)] = None,
                    conversation: Annotated[str | None, Query(max_length=200)] = None,
                    cursor: Annotated[str | None, Query(max_length=400)] = None) -> Response:
    wanted = {"status": status if status in _STATUSES else None, "agent": agent or None,
              "conversation": conversation or None}

    async def build(who: Principal) -> Context:
        listing = await runs.list_runs(request, who, limit=_PAGE, cursor=cursor or None,
                                       **wanted)  # type: ignore[arg-type]
        query = {k: v for k, v in wanted.items() if v}
        known = sorted(state(request).executor.agents)
        return {"title": "Runs", "runs": listing["runs"], "next": listing["next_cursor"],
                "filters": wanted, "query": query, "statuses": _STATUSES, "agents": known,
                "cursor": cursor or ""}

    return await page(request, "runs.html", build)


@router.get("/console/runs/{run_id}")
async def run_page(run_id: str, request: Request) -> Response:
    async def build(who: Principal) -> Context:
        _check_id(run_id, "run")
        run = await runs.get_run(run_id, request, who)
        return {"title": f"Run {run_id}", "run": run}

    return await page(request, "run.html", build)


def _check_id(value: str, what: str) -> None:
    if not re.fullmatch(runs.ID_PATTERN.strip("^$"), value):
        raise ApiError(404, "not_found", f"no {what} {value[:80]!r} here")


# ------------------------------------------------------------------- approvals, escalations


@router.get("/console/approvals")
async def approvals_page(request: Request) -> Response:
    async def build(who: Principal) -> Context:
        queue = await humans.approvals(request, who, status="open", limit=50, offset=0)
        items = [await humans.approval(t["id"], request, who) for t in queue["items"]]
        return {"title": "Approvals", "items": items, "single": False}

    return await page(request, "approvals.html", build)


@router.get("/console/approvals/{task_id}")
async def approval_page(task_id: str, request: Request) -> Response:
    async def build(who: Principal) -> Context:
        _check_id(task_id, "approval")
        item = await humans.approval(task_id, request, who)
        return {"title": f"Approval {task_id}", "items": [item], "single": True}

    return await page(request, "approvals.html", build)


@router.get("/console/escalations")
async def escalations_page(request: Request) -> Response:
    async def build(who: Principal) -> Context:
        items: list[dict[str, Any]] = []
        for status in ("open", "claimed"):
            queue = await humans.escalations(request, who, status=status, limit=50,
                                             offset=0)
            items += [await humans.escalation(t["id"], request, who) for t in queue["items"]]
        items.sort(key=lambda t: t["created_at"])
        return {"title": "Escalations", "items": items, "single": False}

    return await page(request, "escalations.html", build)


@router.get("/console/escalations/{task_id}")
async def escalation_page(task_id: str, request: Request) -> Response:
    async def build(who: Principal) -> Context:
        _check_id(task_id, "escalation")
        item = await humans.escalation(task_id, request, who)
        return {"title": f"Escalation {task_id}", "items": [item], "single": True}

    return await page(request, "escalations.html", build)


# ---------------------------------------------------------------------------------- flows


@router.get("/console/flows")
async def flows_page(request: Request) -> Response:
    from keel.server._api_flows import counter

    async def build(who: Principal) -> Context:
        c = counter(request)
        rows = []
        for name in sorted(c.agents):
            graph = c.graph(name)
            counts = await c.counts(name, who.tenant, 24.0)
            rows.append({"name": name, "kind": graph.kind, "nodes": len(graph.nodes),
                         "runs": counts["runs"]})
        return {"title": "Flows", "flows": rows}

    return await page(request, "flows.html", build)


@router.get("/console/flows/{name}")
async def flow_page(name: str, request: Request,
                    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24.0) -> Response:
    from keel.server._api_flows import counter
    from keel.server._console_flows import layout

    async def build(who: Principal) -> Context:
        c = counter(request)
        graph = c.graph(name)
        counts = await c.counts(name, who.tenant, hours)
        return {"title": f"Flow {name}", "graph": graph, "drawing": layout(graph),
                "counts": counts}

    return await page(request, "flow.html", build)


# ----------------------------------------------------------------------------------- chat


@router.get("/chat/login")
async def chat_login_form(request: Request,
                          next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return render(request, "chat_login.html", next=_chat_next(next), error=None, who=None,
                  title="Sign in to chat")


def _chat_next(value: str | None) -> str:
    target = safe_next(value)
    return target if target.startswith("/chat") else "/chat"


@router.post("/chat/login")
async def chat_login(request: Request, token: Annotated[str, Form(max_length=4096)] = "",
                     next: Annotated[str, Form(max_length=500)] = "/chat") -> Response:
    """A customer signs in with the access token their service minted for them
    (``POST /v1/chat/tokens``): it becomes their session, as a key's token does."""
    target = _chat_next(next)

    def refused(status: int, error: str) -> Response:
        return render(request, "chat_login.html", status, next=target, who=None, error=error,
                      title="Sign in to chat")

    if not same_origin(request):
        return refused(403, "This form must be sent from this site.")
    s = state(request)
    try:
        await s.auth.limits.check(f"addr:{request.client.host if request.client else '?'}")
        claims = read_token(token.strip(), s.auth.secret, audience=s.auth.audience)
        if claims.user is None or not await s.keys.is_active(claims.key_id, claims.generation):
            raise AuthError("not a customer token", reason="claims")
    except ApiError as exc:
        return refused(exc.status, "Too many attempts; wait a moment and try again.")
    except (AuthError, UserError):
        return refused(401, "That access token was not accepted: it is unknown, expired or "
                       "revoked. Ask for a new one where you signed in.")
    response = RedirectResponse(target, status_code=303)
    set_session(request, response, token.strip(), claims.jti)
    return response


@router.get("/chat")
async def chat_new(request: Request,
                   agent: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    return await _chat(request, None, agent)


@router.get("/chat/{conversation_id}")
async def chat_page(conversation_id: str, request: Request,
                    agent: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    return await _chat(request, conversation_id, agent)


async def _chat(request: Request, conversation_id: str | None, agent: str | None) -> Response:
    async def build(who: Principal) -> Context:
        s = state(request)
        allowed_names = getattr(request.app.state.spec, "chat_agents", None)
        known = sorted(n for n in s.executor.agents
                       if allowed_names is None or n in allowed_names)
        turns: list[dict[str, Any]] = []
        if conversation_id is not None:
            _check_id(conversation_id, "conversation")
            turns = [chat.turn_view(s, r, who)
                     for r in await chat.own_turns(s, conversation_id, who)]
        name = agent or (turns[-1]["agent"] if turns else None) or (known[0] if known else "")
        chat.chat_agent(request, name)
        return {"title": f"Chat with {name}", "agent": name, "turns": turns,
                "conversation": conversation_id or "",
                "max_chars": chat.MAX_MESSAGE_CHARS}

    return await page(request, "chat.html", build, action="chat")
