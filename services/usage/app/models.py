"""The one table: a usage record per proxied request, keyed by the id the gateway minted.

Times are Unix seconds (``created_at``, what the Usage API buckets by) plus milliseconds for
durations. Token counts are NULL when the upstream did not say (or said nonsense): unknown is
not zero.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class UsageRecord(Base):
    __tablename__ = "usage_records"

    # Minted by the gateway per request (not the client-supplied X-Request-ID, which a client
    # could repeat): a resent batch inserts nothing twice.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(256))
    served_model: Mapped[str | None] = mapped_column(String(256))
    alias: Mapped[str | None] = mapped_column(String(256))
    service: Mapped[str | None] = mapped_column(String(64))
    instance: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_tokens: Mapped[int | None] = mapped_column(BigInteger)
    images: Mapped[int | None] = mapped_column(Integer)
    image_size: Mapped[str | None] = mapped_column(String(32))
    characters: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_usage_kind_time", "kind", "created_at"),
        Index("ix_usage_key_time", "key_id", "created_at"),
    )
