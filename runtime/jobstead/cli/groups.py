"""What ``jobstead batches`` and ``jobstead workflows`` share: groups of jobs, each with statistics
and continuations, listed, shown and cancelled the same way.

Each command module keeps what is its own (a workflow's name and steps, its
retry) and the exit code of an unknown id: ``fetch`` raises the error its
caller names.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar


class Stats(Protocol):
    def to_json(self) -> dict[str, int]: ...


class Group(Protocol):
    """A batch's or a workflow's record, as far as these commands read it."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def continuations(self) -> Sequence[tuple[str, int]]: ...
    @property
    def events(self) -> tuple[str, ...]: ...
    @property
    def created_at(self) -> datetime: ...


G = TypeVar("G", bound=Group)


def add_list_options(parser: argparse.ArgumentParser, plural: str, statuses: Sequence[str]) -> None:
    """``--tenant``, ``--status``, ``--limit``, ``--offset`` and ``--json`` of a ``list`` command."""
    parser.add_argument("--tenant", help=f"only this tenant's {plural}")
    parser.add_argument("--status", choices=statuses, help=f"only {plural} in this state")
    parser.add_argument("--limit", type=int_at_least("--limit", 1), default=25)
    parser.add_argument("--offset", type=int_at_least("--offset", 0), default=0)
    parser.add_argument("--json", action="store_true")


def add_id_command(
    sub: Any,
    name: str,
    noun: str,
    func: Callable[[argparse.Namespace], int],
    common: argparse.ArgumentParser,
    app_option: Any,
    *,
    help: str,
    description: str | None = None,
    json: bool = False,
) -> None:
    """A command taking one group's id (``show``, ``cancel``, ``retry``)."""
    p = sub.add_parser(name, help=help, description=description, parents=[common])
    p.set_defaults(func=func)
    p.add_argument("id", type=id_of(noun))
    if json:
        p.add_argument("--json", action="store_true")
    app_option(p, required=False)


def stat_cells(record: Group, columns: Sequence[str]) -> list[int]:
    stats = record.stats.to_json()
    return [stats[c] for c in columns]


def print_summary(record: Group, title: str) -> None:
    """The head of ``show``: ``title`` (and the tenant), the statistics, the metadata if any."""
    print(title + (f" (tenant {record.tenant})" if record.tenant else ""))
    print("stats: " + ", ".join(f"{k} {v}" for k, v in record.stats.to_json().items()))
    if record.metadata:
        print(f"metadata: {record.metadata}")


def print_continuations(record: Group) -> None:
    """One line per event the group has a continuation for: its job, or that it has not fired yet."""
    fired = dict(record.continuations)
    for event in record.events:
        job = f"job {fired[event]}" if event in fired else "not fired yet"
        print(f"on_{event}: {job}")


def fetch(get: Callable[[int], G], group_id: int, missing: type[Exception], noun: str, error: type[Exception]) -> G:
    """``get(group_id)``; a ``missing`` one is the one-line ``error`` "no <noun> <id>"."""
    try:
        return get(group_id)
    except missing:
        raise error(f"no {noun} {group_id}") from None


def cancelled_line(noun: str, member: str, record: Group, cancelled: int, stopping: Sequence[int]) -> str:
    """What ``cancel`` says once done: how many members it cancelled and how many it told to stop."""
    return f"{noun} {record.id} cancelled: {cancelled} {member}(s) cancelled" + (
        f", {len(stopping)} running {member}(s) told to stop" if stopping else ""
    )


def id_of(noun: str) -> Callable[[str], int]:
    """An argparse type: a group's id (a whole number from 1), the error naming ``noun``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{noun} id {raw!r}: give a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{noun} id {raw!r}: ids start at 1")
        return value

    return parse


def int_at_least(option: str, low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``low``, the error naming ``option``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {raw!r}: give a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{option} {raw!r}: must be at least {low}")
        return value

    return parse
