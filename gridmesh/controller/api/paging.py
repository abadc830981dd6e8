"""Keyed paging shared by every List call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from gridmesh.controller.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page(items: Iterable[T], key: Callable[[T], str], page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of ``items`` (sorted by ``key``) after ``page_token`` (the last key of the previous page).

    Keyed rather than offset paging, so objects added or removed meanwhile never shift a page.
    """
    if page_size > MAX_PAGE:
        raise InvalidArgument("page_size", f"{page_size}; at most {MAX_PAGE} allowed")
    size = page_size or DEFAULT_PAGE
    ordered = sorted((i for i in items if key(i) > page_token), key=key)
    chunk = ordered[:size]
    return chunk, key(chunk[-1]) if len(ordered) > size else ""
