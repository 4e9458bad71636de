"""What ``jobstead batches`` and ``jobstead workflows`` share: groups of jobs, each with statistics
and continuations, listed, shown and cancelled the same way.

Each command module keeps what is its own (a workflow's name and steps, its
retry, the columns of its list) and describes its groups once as a ``Kind``:
their names, and the exit code of an unknown id (``Kind.fetch`` raises the
error the kind names).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .errors import OperationFailed
from .output import print_json


class Stats(Protocol):
    @property
    def cancelled(self) -> int: ...
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
    @property
    def cancelled_at(self) -> datetime | None: ...
    def to_json(self) -> dict[str, Any]: ...


G = TypeVar("G", bound=Group)


@dataclass(frozen=True)
class Kind:
    """A kind of group as its commands speak of it: ``batch`` of ``job`` s, ``workflow`` of ``step`` s."""

    noun: str
    plural: str
    member: str
    statuses: Sequence[str]
    #: The store's error for an unknown id, and the CLI's error it becomes (its exit code).
    missing: type[Exception]
    unknown: type[Exception]
    #: Whether a group is cancelled once only (a batch: its store refuses a second cancel), or
    #: again while it is active (a workflow: a step retried by hand since may be cancelled with it).
    cancels_once: bool = False

    def fetch(self, get: Callable[[int], G], group_id: int) -> G:
        """``get(group_id)``; a missing one is the one-line ``unknown`` error "no <noun> <id>"."""
        return fetch(get, group_id, self.missing, self.noun, self.unknown)

    def add_group(self, commands: Any, common: Any, parser_class: type[argparse.ArgumentParser], *, about: str) -> Any:
        """The ``<plural>`` command; its subcommands, to add each one to."""
        group = commands.add_parser(self.plural, help=about, parents=[common])
        return group.add_subparsers(dest=f"{self.plural}_command", required=True, parser_class=parser_class)

    def add_list_command(
        self, sub: Any, func: Callable[[argparse.Namespace], int], common: Any, app_option: Any
    ) -> argparse.ArgumentParser:
        """``list`` with the options every kind has; returned for the kind's own filters."""
        p: argparse.ArgumentParser = sub.add_parser(
            "list", help=f"{self.plural}, newest first, with their statistics", parents=[common]
        )
        p.set_defaults(func=func)
        add_list_options(p, self.plural, self.statuses)
        app_option(p, required=False)
        return p

    def add_show_command(
        self, sub: Any, func: Callable[[argparse.Namespace], int], common: Any, app_option: Any, *, about: str
    ) -> None:
        add_id_command(sub, "show", self.noun, func, common, app_option, help=about, json=True)

    def add_cancel_command(
        self, sub: Any, func: Callable[[argparse.Namespace], int], common: Any, app_option: Any, *, waiting: str
    ) -> None:
        """``cancel ID``: ``waiting`` (the members it cancels at once) in its description."""
        text = (
            f"cancel a {self.noun}: {waiting} at once, its running ones told to stop now; "
            f"a {self.noun} that is already final is left as it is"
        )
        about = f"cancel a {self.noun} as a whole"
        add_id_command(sub, "cancel", self.noun, func, common, app_option, help=about, description=text)

    def cancel(self, get: Callable[[int], G], cancel: Callable[[int], Sequence[int]], group_id: int) -> str:
        """``cancel(group_id)`` of an active group; what it did, in one line.

        A group that is final (or, ``cancels_once``, cancelled already, its
        running members still stopping) is ``OperationFailed``.
        """
        before = self.fetch(get, group_id)
        if before.status != "active" or (self.cancels_once and before.cancelled_at is not None):
            status = "cancelled" if before.status == "active" else before.status
            raise OperationFailed(f"{self.noun} {before.id} already {status}")
        stopping = cancel(group_id)
        after = self.fetch(get, group_id)
        return cancelled_line(self.noun, self.member, after, after.stats.cancelled, stopping)


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


def show(record: Group, as_json: bool, title: str, members: Callable[[], None] | None = None) -> None:
    """``show``: the record as JSON; or its summary, ``members`` (a table of its own) and its continuations."""
    if as_json:
        print_json(record.to_json())
        return
    print_summary(record, title)
    if members is not None:
        members()
    print_continuations(record)


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
