"""usage_records: one row per proxied request.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("subject", sa.String(64)),
        sa.Column("endpoint", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("served_model", sa.String(256)),
        sa.Column("alias", sa.String(256)),
        sa.Column("service", sa.String(64)),
        sa.Column("instance", sa.String(128)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cached_tokens", sa.BigInteger),
        sa.Column("images", sa.Integer),
        sa.Column("image_size", sa.String(32)),
        sa.Column("characters", sa.BigInteger),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("ttft_ms", sa.Integer),
        sa.Column("streamed", sa.Boolean, nullable=False),
    )
    op.create_index("ix_usage_kind_time", "usage_records", ["kind", "created_at"])
    op.create_index("ix_usage_key_time", "usage_records", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_key_time", "usage_records")
    op.drop_index("ix_usage_kind_time", "usage_records")
    op.drop_table("usage_records")
