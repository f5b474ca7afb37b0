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
from sqlalchemy import Select, select

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

Sink = Callable[[dict[str, str]], None]
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


def neutralise(value: str) -> str:
    """Make a cell that a spreadsheet would read as a formula show as plain text."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _query(flt: ExportFilter, tz: ZoneInfo) -> Select[tuple[Report, str | None]]:
    query = (
        select(Report, Resident.pseudonym)
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


def _place(content: Content, code: str | None) -> str:
    if code is None:
        return ""
    municipality = content.municipality(code)
    return municipality.names["en"] if municipality else code


def _location(report: Report, content: Content) -> str:
    if report.latitude is None or report.longitude is None:
        return ""
    where = f"{report.latitude:.6f},{report.longitude:.6f}"
    if report.location_municipality:
        where += f" (near {_place(content, report.location_municipality)})"
    return where


def _row(report: Report, pseudonym: str | None, content: Content, tz: ZoneInfo) -> dict[str, str]:
    by_name = not report.anonymous
    return {
        "reference": report.reference,
        "created": report.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        "kind": report.kind,
        "category": report.category or "",
        "municipality": _place(content, report.municipality),
        "language": report.language,
        "channel": report.channel,
        "text": report.text or "",
        "media_ids": " ".join(str(m["file_id"]) for m in report.media or () if m.get("file_id")),
        "location": _location(report, content),
        "status": report.status,
        "resident": pseudonym or "",
        "shared_by_name": "yes" if by_name else "no",
        "name": (report.shared_name or "") if by_name else "",
        "gender": report.gender or "",
        "age_group": report.age_group or "",
        "answer": report.answer or "",
        "followup": report.followup_answer or "",
    }


async def export_rows(
    db: Database, flt: ExportFilter, content: Content, tz_name: str = "Asia/Tbilisi"
) -> AsyncIterator[dict[str, str]]:
    """The matching reports, oldest first, one dict per row keyed by `COLUMNS`."""
    tz = ZoneInfo(tz_name)
    query = _query(flt, tz).execution_options(yield_per=STREAM_BATCH)
    async with db.transaction() as session:
        result = await session.stream(query)
        async for report, pseudonym in result:
            yield _row(report, pseudonym, content, tz)


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

        def write(row: dict[str, str]) -> None:
            writer.writerow([neutralise(row[name]) for name in COLUMNS])

        yield write


@contextmanager
def _jsonl(out: Output) -> Iterator[Sink]:
    # For programs, not spreadsheets: the text stays exactly as residents wrote it.
    with _text(out, "utf-8") as stream:

        def write(row: dict[str, str]) -> None:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")

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

        def write(row: dict[str, str]) -> None:
            nonlocal line
            line += 1
            for col, name in enumerate(COLUMNS):
                sheet.write_string(line, col, neutralise(row[name]))

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
        async with aclosing(export_rows(db, flt, content, tz_name)) as rows:
            async for row in rows:
                write(row)
                count += 1
    log.info("exported %d rows as %s", count, fmt)
    return count
