"""How fast a coordinator's export of many reports is written, and in how much memory.

What it measures
    N reports (default 100,000: texts of a few hundred characters in the four languages,
    some starting like a spreadsheet formula, media ids, locations, a pseudonym each) are
    seeded, then exported once per format (CSV, JSON Lines, XLSX) through
    `bot.outreach.export.write_export` into a temporary file. For each format it prints
    the wall time, microseconds per row, and the ratio to a baseline measured in the same
    run: the same rows read through SQLAlchemy Core and written by the csv module with no
    conversion at all (what reading and writing alone cost on this machine). A second
    pass per format runs under tracemalloc and prints the peak of Python allocations
    for N/10 and for N reports: "flat" memory means the two are about the same.

Why it is not a test
    Its figures depend on the machine; it prints and never asserts.

Run:  .venv/bin/python -m benchmarks.export [--reports 100000] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from benchmarks.databases import PG_URL, fresh_database
from bot.config import LANGUAGES
from bot.outreach import export
from bot.outreach.export import ExportFilter, write_export
from flows.content import load_content
from storage.db import Database
from storage.models import Report, Resident, utcnow

SEED_BATCH = 5000
TARGET_SECONDS = {"csv": 3.0, "jsonl": 3.0, "xlsx": 10.0}
TEXTS = {
    "ka": "სოფლის გზა დაზიანებულია და წვიმის შემდეგ სკოლის ავტობუსი ვეღარ გადის. ",
    "az": "Kəndin yolu xarabdır, yağışdan sonra məktəb avtobusu keçə bilmir. ",
    "hy": "Գյուղի ճանապարհը քանդված է, անձրևից հետո դպրոցական ավտոբուսը չի անցնում։ ",
    "ru": "Дорога в селе разбита, после дождя школьный автобус не проезжает. ",
}


@dataclass(frozen=True)
class Options:
    reports: int
    database: str
    pg_url: str


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.export", description="Export N reports; print figures."
    )
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL)
    args = parser.parse_args(argv)
    if args.reports < 10:
        parser.error("need at least 10 reports")
    return Options(args.reports, args.database, args.pg_url)


async def seed(db: Database, count: int) -> None:
    """`count` reports by count // 10 residents, oldest first, a batch per statement."""
    now = utcnow()
    places = [m.code for m in load_content().municipalities]
    async with db.transaction() as session:
        residents = (
            await session.scalars(
                insert(Resident).returning(Resident.id, sort_by_parameter_order=True),
                [
                    {"pseudonym": f"E-{n:08d}", "language": "ka", "consent": True}
                    for n in range(max(1, count // 10))
                ],
            )
        ).all()
    for start in range(0, count, SEED_BATCH):
        rows = []
        for n in range(start, min(count, start + SEED_BATCH)):
            lang = LANGUAGES[n % len(LANGUAGES)]
            rows.append(
                {
                    "reference": f"KH-{n:08d}",
                    "kind": "dcfta" if n % 5 == 0 else "need",
                    "resident_id": residents[n % len(residents)],
                    "channel": "telegram" if n % 2 else "viber",
                    "language": lang,
                    "municipality": places[n % len(places)],
                    "category": "roads",
                    "text": ("=SUM(A1) " if n % 50 == 0 else "") + TEXTS[lang] * 3,
                    "media": [{"file_id": f"AgAC{n:012d}", "kind": "photo"}] if n % 3 else [],
                    "latitude": 41.4 + n % 100 / 1000 if n % 4 == 0 else None,
                    "longitude": 44.8 + n % 100 / 1000 if n % 4 == 0 else None,
                    "location_municipality": places[0] if n % 4 == 0 else None,
                    "anonymous": n % 7 != 0,
                    "shared_name": "Nino Beridze" if n % 7 == 0 else None,
                    "status": "received",
                    "answer": "Answered." if n % 5 == 0 else None,
                    "created_at": now - timedelta(minutes=count - n),
                    "updated_at": now,
                }
            )
        async with db.transaction() as session:
            await session.execute(insert(Report), rows)


async def baseline(db: Database, out: Path) -> None:
    """The same columns read through Core and written as they come: no conversion at all."""
    query = export._query(ExportFilter(), export.ZoneInfo("Asia/Tbilisi"))
    with open(out, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        async with db.engine.connect() as connection:
            result = await connection.stream(query.execution_options(yield_per=500))
            async for batch in result.partitions(500):
                writer.writerows(batch)


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await work()
    return time.perf_counter() - began


async def peak(work: Callable[[], Awaitable[object]]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        await work()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


async def run(options: Options) -> None:
    content = load_content()
    small = ExportFilter(since=None)
    async with fresh_database(options.database, options.pg_url) as db:
        began = time.perf_counter()
        await seed(db, options.reports)
        print(
            f"Khma export benchmark: {options.database}, {options.reports} reports "
            f"(seeded in {time.perf_counter() - began:.1f} s)"
        )
        with tempfile.TemporaryDirectory(prefix="khma-export-out-") as folder:
            out = Path(folder)
            base = await timed(lambda: baseline(db, out / "baseline.csv"))
            print(
                f"  baseline (Core read + csv.writer, no conversion): {base:.2f} s, "
                f"{base / options.reports * 1e6:.0f} µs/row"
            )
            print(
                f"  {'format':<8}{'time':>9}{'µs/row':>9}{'÷ baseline':>12}{'target':>10}"
                f"{'peak MiB at N/10':>19}{'peak MiB at N':>16}{'file MiB':>10}"
            )
            for fmt in ("csv", "jsonl", "xlsx"):
                target = out / f"reports.{fmt}"
                seconds = await timed(
                    lambda f=fmt, t=target: write_export(db, small, content, f, t)
                )
                size = target.stat().st_size / 2**20
                whole = await peak(lambda f=fmt, t=target: write_export(db, small, content, f, t))
                tenth = await peak(lambda f=fmt, t=target: write_tenth(db, content, f, t, options))
                verdict = "met" if seconds <= TARGET_SECONDS[fmt] else "NOT MET"
                print(
                    f"  {fmt:<8}{seconds:>8.2f}s{seconds / options.reports * 1e6:>9.0f}"
                    f"{seconds / base:>11.1f}×{'≤ ' + format(TARGET_SECONDS[fmt], 'g') + ' s':>10}"
                    f"{tenth / 2**20:>19.1f}{whole / 2**20:>16.1f}{size:>10.1f}  {verdict}"
                )


async def write_tenth(db: Database, content, fmt: str, target: Path, options: Options) -> int:
    """An export of the newest tenth of the reports, for the memory comparison."""
    async with db.transaction() as session:
        newest = await session.scalar(
            select(Report.created_at)
            .order_by(Report.created_at.desc())
            .offset(options.reports // 10)
            .limit(1)
        )
    tz = export.ZoneInfo("Asia/Tbilisi")
    since = newest.astimezone(tz).date() if newest is not None else None
    return await write_export(db, ExportFilter(since=since), content, fmt, target)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_options(argv)))


if __name__ == "__main__":
    main()
