"""The usage endpoints: ingest (gateway only), OpenAI's Usage API, and a per-key summary.

``GET /v1/organization/usage/{completions,embeddings,images,audio_speeches}`` answer in
OpenAI's ``UsageResponse`` shape. Admins see every key; a user sees their own records only
and gets 403 for another user's key or user id. Bad parameters are 400 naming the ``param``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from nexus_kit import InvalidRequestError, PermissionDeniedError, get_logger

from . import schemas, store
from .deps import Caller, CallerDep, InternalCaller, StateDep

router = APIRouter(tags=["usage"])
log = get_logger("nexus.usage")

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86_400}
# OpenAI's documented limits: default and maximum number of buckets per width.
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
GROUPABLE = {
    "completions": ("model", "api_key_id", "user_id"),
    "embeddings": ("model", "api_key_id", "user_id"),
    "images": ("model", "api_key_id", "user_id", "size", "source"),
    "audio_speeches": ("model", "api_key_id", "user_id"),
}
IdList = Annotated[list[str] | None, Query(max_length=100)]


@router.post(
    "/v1/usage/records", operation_id="usage.records.ingest", summary="Store usage records"
)
async def ingest(
    body: schemas.IngestRequest, state: StateDep, _: InternalCaller
) -> schemas.IngestResponse:
    if len(body.records) > state.settings.max_batch_records:
        raise InvalidRequestError(
            f"At most {state.settings.max_batch_records} records a batch.", param="records"
        )
    inserted = await store.ingest(state.db, body.records)
    return schemas.IngestResponse(received=len(body.records), inserted=inserted)


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Repeated parameters (``a=1&a=2``), ``a[]=1`` style or comma-separated, all accepted."""
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(dict.fromkeys(out))


async def _page(
    kind: str, state: StateDep, who: Caller, start_time: int, end_time: int | None,
    bucket_width: str, group_by: list[str] | None, api_key_ids: list[str] | None,
    user_ids: list[str] | None, models: list[str] | None, limit: int | None, page: str | None,
) -> schemas.UsagePage:  # fmt: skip
    width = WIDTHS.get(bucket_width)
    if width is None:
        raise InvalidRequestError("bucket_width must be one of 1m, 1h, 1d.", param="bucket_width")
    default_limit, max_limit = LIMITS[bucket_width]
    limit = default_limit if limit is None else limit
    if not 1 <= limit <= max_limit:
        raise InvalidRequestError(
            f"limit must be between 1 and {max_limit} for bucket_width={bucket_width}.",
            param="limit",
        )
    end = int(time.time()) + 1 if end_time is None else end_time
    if start_time < 0 or end <= start_time:
        raise InvalidRequestError("start_time must be >= 0 and before end_time.", param="end_time")
    groups = _split(group_by)
    bad = [g for g in groups if g not in GROUPABLE[kind]]
    if bad:
        raise InvalidRequestError(
            f"group_by supports {', '.join(GROUPABLE[kind])} here.", param="group_by"
        )
    first = _cursor(page, start_time, end, width)
    total = -(-(end - start_time) // width)
    last = min(first + limit, total)
    scope = store.Scope(
        kind=kind, start=start_time, width=width, group_by=groups,
        lower=start_time + first * width, end=min(end, start_time + last * width),
        user_ids=_split(user_ids),
        key_ids=_split(api_key_ids), models=_split(models),
    )  # fmt: skip
    scope = await _restrict(state, who, scope)
    found = await store.buckets(state.db, scope)
    data = [
        schemas.Bucket(
            start_time=start_time + i * width,
            end_time=min(start_time + (i + 1) * width, end),
            results=found.get(i, []),
        )
        for i in range(first, last)
    ]
    more = last < total
    return schemas.UsagePage(data=data, has_more=more, next_page=str(last) if more else None)


def _cursor(page: str | None, start: int, end: int, width: int) -> int:
    if page is None:
        return 0
    total = -(-(end - start) // width)
    if not page.isdigit() or not 0 <= int(page) < total:
        raise InvalidRequestError("page is not a cursor from this query's next_page.", param="page")
    return int(page)


async def _restrict(state: StateDep, who: Caller, scope: store.Scope) -> store.Scope:
    if who.is_admin:
        return scope
    if any(u != who.subject for u in scope.user_ids):
        raise PermissionDeniedError("You may see your own usage only.", param="user_ids")
    if scope.key_ids and await store.foreign_owner(state.db, who.subject, scope.key_ids):
        raise PermissionDeniedError("You may see your own keys' usage only.", param="api_key_ids")
    return replace(scope, subject=who.subject)


def _usage_route(kind: str) -> None:
    async def usage(
        state: StateDep,
        who: CallerDep,
        start_time: Annotated[int, Query(ge=0, le=2**40)],
        end_time: Annotated[int | None, Query(ge=1, le=2**40)] = None,
        bucket_width: Annotated[str, Query(max_length=8)] = "1d",
        group_by: IdList = None,
        api_key_ids: IdList = None,
        user_ids: IdList = None,
        models: IdList = None,
        project_ids: IdList = None,
        limit: Annotated[int | None, Query()] = None,
        page: Annotated[str | None, Query(max_length=32)] = None,
    ) -> schemas.UsagePage:
        if project_ids:
            raise InvalidRequestError("Nexus has no projects.", param="project_ids")
        return await _page(
            kind, state, who, start_time, end_time, bucket_width, group_by, api_key_ids,
            user_ids, models, limit, page,
        )  # fmt: skip

    router.add_api_route(
        f"/v1/organization/usage/{kind}", usage, methods=["GET"],
        operation_id=f"usage.{kind}", summary=f"{kind.replace('_', ' ').capitalize()} usage",
        response_model=schemas.UsagePage,
    )  # fmt: skip


for _kind in GROUPABLE:
    _usage_route(_kind)


@router.get("/v1/usage/keys/{key_id}", operation_id="usage.keys.summary", summary="One key's usage")
async def key_summary(
    key_id: Annotated[str, Path(min_length=1, max_length=64)], state: StateDep, who: CallerDep
) -> schemas.KeySummary:
    owner = await store.key_owner(state.db, key_id)
    if not who.is_admin and owner not in (None, who.subject):
        raise PermissionDeniedError("You may see your own keys' usage only.", param="key_id")
    now = datetime.now(UTC)
    day = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    month = int(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    first, last = await store.key_span(state.db, key_id)
    return schemas.KeySummary(
        key_id=key_id, user_id=owner, first_used_at=first, last_used_at=last,
        total=schemas.Totals(**await store.key_totals(state.db, key_id)),
        today=schemas.Totals(**await store.key_totals(state.db, key_id, day)),
        this_month=schemas.Totals(**await store.key_totals(state.db, key_id, month)),
        models=[schemas.ModelTotals(**m) for m in await store.key_models(state.db, key_id)],
    )  # fmt: skip
