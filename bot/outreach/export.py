"""Reports and DCFTA questions for coordinators, as CSV, XLSX or JSON Lines.

Coordinators open exports in Excel or LibreOffice, so the text residents typed
must never run there: every spreadsheet cell that starts like a formula gets a
leading apostrophe, and XLSX cells are always written as plain strings. Dates
are Tbilisi calendar days, as coordinators think of them. Rows stream from the
database to the file, so an export of years of reports needs no more memory
than one of a day. Residents appear only by their random pseudonym, and a name
only when they chose to share it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, aclosing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, BinaryIO
from zoneinfo import ZoneInfo

import xlsxwriter
from sqlalchemy import Select, Text, cast, select

from flows.content import Content
from storage.db import Database
from storage.models import Report, Resident

log = logging.getLogger(__name__)

KINDS = ("need", "dcfta")

COLUMNS: tuple[str, ...] = (
    "reference",
    "created",
    "kind",
    "category",
    "municipality",
    "language",
    "channel",
    "text",
    "media_ids",
    "location",
    "status",
    "resident",
    "shared_by_name",
    "name",
    "gender",
    "age_group",
    "answer",
    "followup",
)

# Character widths for the XLSX columns, so the sheet is readable when opened.
WIDTHS: dict[str, int] = {
    "reference": 18,
    "created": 17,
    "kind": 7,
    "category": 16,
    "municipality": 18,
    "language": 9,
    "channel": 10,
    "text": 60,
    "media_ids": 30,
    "location": 40,
    "status": 11,
    "resident": 14,
    "shared_by_name": 15,
    "name": 24,
    "gender": 9,
    "age_group": 10,
    "answer": 60,
    "followup": 9,
}

# What a spreadsheet may take for the start of a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

STREAM_BATCH = 500

Sink = Callable[[list[list[str]]], None]  # writes a batch of rows in `COLUMNS` order
Output = str | Path | BinaryIO


@dataclass(frozen=True)
class ExportFilter:
    """Which reports to export; `since` and `until` are inclusive Tbilisi calendar days."""

    since: date | None = None
    until: date | None = None
    municipality: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown report kind {self.kind!r}: expected one of {KINDS}")


_FORMULA_CHARS = frozenset(FORMULA_STARTS)  # each one character: tested by the first


def neutralise(value: str) -> str:
    """Make a cell that a spreadsheet would read as a formula show as plain text."""
    return "'" + value if value[:1] in _FORMULA_CHARS else value


def _neutralised(row: list[str]) -> list[str]:
    """`neutralise` over a row, inline: called for every cell of every row."""
    return ["'" + value if value[:1] in _FORMULA_CHARS else value for value in row]


_FIELDS = (
    Report.reference,
    Report.created_at,
    Report.kind,
    Report.category,
    Report.municipality,
    Report.language,
    Report.channel,
    Report.text,
    # As the stored text: most reports carry no media, and decoding "[]" for each of
    # them cost as much as writing the row.
    cast(Report.media, Text),
    Report.latitude,
    Report.longitude,
    Report.location_municipality,
    Report.status,
    Resident.pseudonym,
    Report.anonymous,
    Report.shared_name,
    Report.gender,
    Report.age_group,
    Report.answer,
    Report.followup_answer,
)


def _query(flt: ExportFilter, tz: ZoneInfo) -> Select[tuple]:
    """Plain columns, not ORM objects: an export reads each row once and keeps none."""
    query = (
        select(*_FIELDS)
        .outerjoin(Resident, Report.resident_id == Resident.id)
        .order_by(Report.created_at, Report.id)
    )
    if flt.since is not None:
        start = datetime.combine(flt.since, time.min, tz).astimezone(UTC)
        query = query.where(Report.created_at >= start)
    if flt.until is not None:
        end = datetime.combine(flt.until + timedelta(days=1), time.min, tz).astimezone(UTC)
        query = query.where(Report.created_at < end)
    if flt.municipality is not None:
        query = query.where(Report.municipality == flt.municipality)
    if flt.kind is not None:
        query = query.where(Report.kind == flt.kind)
    return query


def _media_ids(stored: str | None) -> str:
    if not stored or "file_id" not in stored:
        return ""
    return " ".join(str(m["file_id"]) for m in json.loads(stored) if m.get("file_id"))


class _Rows:
    """Turns database rows into export rows (lists in `COLUMNS` order), fast.

    What repeats is worked out once: municipality names, the Tbilisi offset of each
    hour (reports come in time order, so consecutive rows share it).
    """

    def __init__(self, content: Content, tz: ZoneInfo) -> None:
        self.content = content
        self.tz = tz
        self._places: dict[str | None, str] = {None: ""}
        self._hour = -1.0  # the UTC hour (of the epoch) whose offset `_offset` is
        self._offset = timedelta(0)

    def place(self, code: str | None) -> str:
        name = self._places.get(code)
        if name is None:
            municipality = self.content.municipality(code) if code else None
            name = municipality.names["en"] if municipality else (code or "")
            self._places[code] = name
        return name

    def local(self, moment: datetime) -> str:
        stamp = moment.timestamp()
        hour = stamp // 3600
        if hour != self._hour:
            self._hour = hour
            self._offset = moment.astimezone(self.tz).utcoffset() or timedelta(0)
        at = moment + self._offset
        return f"{at.year:04d}-{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d}"

    def __call__(self, row: tuple) -> list[str]:
        (
            reference,
            created_at,
            kind,
            category,
            municipality,
            language,
            channel,
            text,
            media,
            latitude,
            longitude,
            near,
            status,
            pseudonym,
            anonymous,
            shared_name,
            gender,
            age_group,
            answer,
            followup,
        ) = row
        location = ""
        if latitude is not None and longitude is not None:
            location = f"{latitude:.6f},{longitude:.6f}"
            if near:
                location += f" (near {self.place(near)})"
        by_name = not anonymous
        return [
            reference,
            self.local(created_at),
            kind,
            category or "",
            self.place(municipality),
            language,
            channel,
            text or "",
            _media_ids(media),
            location,
            status,
            pseudonym or "",
            "yes" if by_name else "no",
            (shared_name or "") if by_name else "",
            gender or "",
            age_group or "",
            answer or "",
            followup or "",
        ]


async def _batches(
    db: Database, flt: ExportFilter, content: Content, tz_name: str
) -> AsyncIterator[list[list[str]]]:
    """The matching reports, oldest first, a batch at a time (a server-side cursor on
    PostgreSQL), so memory stays flat however many there are."""
    convert = _Rows(content, ZoneInfo(tz_name))
    query = _query(flt, convert.tz)
    async with db.engine.connect() as connection:
        result = await connection.stream(query.execution_options(yield_per=STREAM_BATCH))
        async for batch in result.partitions(STREAM_BATCH):
            yield [convert(row) for row in batch]


async def export_rows(
    db: Database, flt: ExportFilter, content: Content, tz_name: str = "Asia/Tbilisi"
) -> AsyncIterator[dict[str, str]]:
    """The matching reports, oldest first, one dict per row keyed by `COLUMNS`."""
    async with aclosing(_batches(db, flt, content, tz_name)) as batches:
        async for batch in batches:
            for values in batch:
                yield dict(zip(COLUMNS, values, strict=True))


@contextmanager
def _text(out: Output, encoding: str) -> Iterator[IO[str]]:
    """A text stream over a path or a binary file; newlines are written as given."""
    if isinstance(out, str | Path):
        with open(out, "w", encoding=encoding, newline="") as stream:
            yield stream
        return
    wrapper = io.TextIOWrapper(out, encoding=encoding, newline="")
    try:
        yield wrapper
    finally:
        wrapper.flush()
        wrapper.detach()  # the caller's file stays open


@contextmanager
def _csv(out: Output) -> Iterator[Sink]:
    # The BOM makes Excel read UTF-8 rather than the system's code page.
    with _text(out, "utf-8-sig") as stream:
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow(COLUMNS)

        def write(batch: list[list[str]]) -> None:
            writer.writerows([_neutralised(row) for row in batch])

        yield write


@contextmanager
def _jsonl(out: Output) -> Iterator[Sink]:
    # For programs, not spreadsheets: the text stays exactly as residents wrote it.
    with _text(out, "utf-8") as stream:

        def write(batch: list[list[str]]) -> None:
            stream.write(
                "".join(
                    json.dumps(dict(zip(COLUMNS, row, strict=True)), ensure_ascii=False) + "\n"
                    for row in batch
                )
            )

        yield write


@contextmanager
def _xlsx(out: Output) -> Iterator[Sink]:
    target = str(out) if isinstance(out, Path) else out
    workbook = xlsxwriter.Workbook(target, {"constant_memory": True})
    try:
        sheet = workbook.add_worksheet("reports")
        bold = workbook.add_format({"bold": True})
        for col, name in enumerate(COLUMNS):
            sheet.set_column(col, col, WIDTHS[name])
            sheet.write_string(0, col, name, bold)
        sheet.freeze_panes(1, 0)
        line = 0

        write_string = sheet.write_string

        def write(batch: list[list[str]]) -> None:
            nonlocal line
            for row in batch:
                line += 1
                for col, value in enumerate(_neutralised(row)):
                    if value:
                        write_string(line, col, value)

        yield write
    finally:
        workbook.close()


SINKS: dict[str, Callable[[Output], AbstractContextManager[Sink]]] = {
    "csv": _csv,
    "xlsx": _xlsx,
    "jsonl": _jsonl,
}


async def write_export(
    db: Database,
    flt: ExportFilter,
    content: Content,
    fmt: str,
    out: Output,
    tz_name: str = "Asia/Tbilisi",
) -> int:
    """Write the matching reports to `out` in `fmt` as they stream in; return how many."""
    if fmt not in SINKS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {tuple(SINKS)}")
    count = 0
    with SINKS[fmt](out) as write:
        async with aclosing(_batches(db, flt, content, tz_name)) as batches:
            async for batch in batches:
                write(batch)
                count += len(batch)
    log.info("exported %d rows as %s", count, fmt)
    return count
