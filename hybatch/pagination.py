"""Cursor pagination shared by the list endpoints: ``after`` an object id, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.errors import InvalidRequestError

Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: list[Row]
    has_more: bool


def paginate(
    session: Session,
    query: sa.Select[Any],
    model: Any,
    *,
    after: str | None,
    limit: int,
    descending: bool = True,
) -> Page[Any]:
    """One page of ``query`` ordered by (created_at, id); ``after`` must be an id the query can see."""
    order = (model.created_at.desc(), model.id.desc()) if descending else (model.created_at, model.id)
    if after is not None:
        anchor = session.execute(
            query.with_only_columns(model.created_at, model.id).where(model.id == after)
        ).first()
        if anchor is None:
            raise InvalidRequestError(f"No object with id {after!r} to page after.", param="after")
        key, anchor_key = sa.tuple_(model.created_at, model.id), sa.tuple_(*anchor)
        query = query.where(key < anchor_key if descending else key > anchor_key)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
