"""Writes (idempotent batch ingest) and reads (time buckets, per-key totals) of usage records.

Ingest is ``INSERT ... ON CONFLICT (id) DO NOTHING ... RETURNING id`` (executemany), on SQLite
and PostgreSQL alike, so a batch the gateway resends after a lost answer counts once. Reads
aggregate in SQL: ``(created_at - start) // width`` numbers the bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite

from .db import Database
from .models import UsageRecord
from .schemas import RecordIn

R = UsageRecord


async def ingest(db: Database, records: Sequence[RecordIn]) -> int:
    """Store the records not stored yet; returns how many were new."""
    unique = {r.id: r.model_dump() for r in records}
    rows = list(unique.values())
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    if not rows:
        return 0
    # One statement, many parameter sets: SQLAlchemy's "insertmanyvalues" sends them in
    # multi-row batches within the drivers' parameter limits, compiled once (cached).
    stmt = insert(R).on_conflict_do_nothing(index_elements=["id"]).returning(R.id)
    async with db.session() as session:
        inserted = len((await session.execute(stmt, rows)).all())
        await session.commit()
    return inserted


@dataclass(frozen=True)
class Scope:
    """What a query may see and how it groups: the caller's restriction plus its filters."""

    kind: str
    start: int  # where bucket 0 starts
    lower: int  # first second counted (a page starts at a later bucket)
    end: int
    width: int
    group_by: tuple[str, ...] = ()
    subject: str | None = None  # a user's own records only
    user_ids: tuple[str, ...] = ()
    key_ids: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    def where(self) -> ColumnElement[bool]:
        terms: list[ColumnElement[bool]] = [
            R.kind == self.kind,
            R.created_at >= self.lower,
            R.created_at < self.end,
        ]
        if self.subject is not None:
            terms.append(R.subject == self.subject)
        if self.user_ids:
            terms.append(R.subject.in_(self.user_ids))
        if self.key_ids:
            terms.append(R.key_id.in_(self.key_ids))
        if self.models:
            terms.append(R.model.in_(self.models))
        return and_(*terms)


# group_by field of the Usage API -> column
GROUP_COLUMNS: dict[str, Any] = {
    "model": R.model,
    "api_key_id": R.key_id,
    "user_id": R.subject,
    "size": R.image_size,
}
_SUMS: dict[str, tuple[Any, ...]] = {
    "completions": (R.input_tokens, R.output_tokens, R.cached_tokens),
    "embeddings": (R.input_tokens,),
    "images": (R.images,),
    "audio_speeches": (R.characters,),
}


async def buckets(db: Database, scope: Scope) -> dict[int, list[dict[str, Any]]]:
    """Results per bucket index, each a ``Usage*Result`` of ``scope.kind``."""
    index = ((R.created_at - scope.start) // scope.width).label("bucket")
    groups = [GROUP_COLUMNS[g].label(g) for g in scope.group_by]
    sums = [func.coalesce(func.sum(c), 0) for c in _SUMS[scope.kind]]
    query = (
        select(index, func.count(), *sums, *groups)
        .where(scope.where())
        .group_by(index, *groups)
        .order_by(index, *groups)
    )
    found: dict[int, list[dict[str, Any]]] = {}
    async with db.session() as session:
        for row in (await session.execute(query)).all():
            bucket, count, *rest = row
            values = [int(v) for v in rest[: len(sums)]]
            grouped = dict(zip(scope.group_by, rest[len(sums) :], strict=True))
            found.setdefault(int(bucket), []).append(_result(scope.kind, count, values, grouped))
    return found


def _result(kind: str, count: int, sums: list[int], grouped: dict[str, Any]) -> dict[str, Any]:
    common = {
        "num_model_requests": int(count),
        "project_id": None,
        "user_id": grouped.get("user_id"),
        "api_key_id": grouped.get("api_key_id"),
        "model": grouped.get("model"),
    }
    if kind == "completions":
        inp, out, cached = sums
        return {
            "object": "organization.usage.completions.result",
            "input_tokens": inp, "output_tokens": out,
            "input_cached_tokens": cached, "input_uncached_tokens": max(inp - cached, 0),
            "input_audio_tokens": 0, "output_audio_tokens": 0,
            **common, "batch": None, "service_tier": None,
        }  # fmt: skip
    if kind == "embeddings":
        return {"object": "organization.usage.embeddings.result", "input_tokens": sums[0],
                **common}  # fmt: skip
    if kind == "images":
        source = "image.generation" if "source" in grouped else None
        return {"object": "organization.usage.images.result", "images": sums[0],
                "source": source, "size": grouped.get("size"), **common}  # fmt: skip
    return {"object": "organization.usage.audio_speeches.result", "characters": sums[0],
            **common}  # fmt: skip


async def foreign_owner(db: Database, subject: str, key_ids: Sequence[str]) -> bool:
    """Whether any of these keys has records of another subject (a user asking for them: 403)."""
    query = select(func.count()).where(R.key_id.in_(key_ids), R.subject != subject)
    async with db.session() as session:
        return bool((await session.execute(query)).scalar_one())


async def key_owner(db: Database, key_id: str) -> str | None:
    query = select(R.subject).where(R.key_id == key_id, R.subject.is_not(None)).limit(1)
    async with db.session() as session:
        return (await session.execute(query)).scalar_one_or_none()


def _totals_columns() -> list[Any]:
    return [
        func.count(),
        func.coalesce(func.sum(R.input_tokens), 0),
        func.coalesce(func.sum(R.output_tokens), 0),
        func.coalesce(func.sum(R.cached_tokens), 0),
        func.count().filter(and_(R.input_tokens.is_(None), R.output_tokens.is_(None))),
    ]


def totals_of(row: Sequence[Any]) -> dict[str, int]:
    names = ("requests", "input_tokens", "output_tokens", "cached_tokens",
             "unknown_usage_requests")  # fmt: skip
    return {name: int(value or 0) for name, value in zip(names, row, strict=False)}


async def key_totals(db: Database, key_id: str, since: int = 0) -> dict[str, int]:
    query = select(*_totals_columns()).where(R.key_id == key_id, R.created_at >= since)
    async with db.session() as session:
        return totals_of((await session.execute(query)).one())


async def key_models(db: Database, key_id: str) -> list[dict[str, Any]]:
    query = (
        select(*_totals_columns(), R.model)
        .where(R.key_id == key_id)
        .group_by(R.model)
        .order_by(R.model)
    )
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return [{**totals_of(row[:-1]), "model": row[-1]} for row in rows]


async def key_span(db: Database, key_id: str) -> tuple[int | None, int | None]:
    query = select(func.min(R.created_at), func.max(R.created_at)).where(R.key_id == key_id)
    async with db.session() as session:
        first, last = (await session.execute(query)).one()
    return first, last
