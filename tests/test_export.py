"""What a coordinator gets from `python -m bot export`, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.cell.cell import Cell
from openpyxl.utils.escape import unescape

from bot.outreach.export import COLUMNS, ExportFilter, export_rows, neutralise, write_export
from flows.content import CONTENT_DIR, Content, Municipality
from storage import queries
from storage.db import Database
from storage.models import Report, Resident


def municipalities_only() -> Content:
    """The real municipalities, without the DCFTA answers, which an export never shows."""
    places = json.loads((CONTENT_DIR / "municipalities.json").read_text(encoding="utf-8"))
    return Content(
        regions={r["code"]: r["names"] for r in places["regions"]},
        municipalities=tuple(
            Municipality(m["code"], m["region"], m["lat"], m["lon"], m["names"])
            for m in places["municipalities"]
        ),
        topics=(),
        active=(),
    )


CONTENT = municipalities_only()
BOM = b"\xef\xbb\xbf"

# What a resident might type, on purpose or not, that a spreadsheet would run.
FORMULAS = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]

TEXTS = {
    "ka": "სოფელში წყალი არ მოდის სამი დღეა",
    "hy": "Գյուղում երեք օր է ջուր չկա",
    "az": "Kənddə üç gündür su yoxdur, şikayət edirik",
    "ru": "В селе три дня нет воды — помогите, «срочно»",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def add_resident(db: Database, **values: Any) -> Resident:
    async with db.transaction() as session:
        resident = Resident(**{"language": "ka", "municipality": "marneuli", **values})
        session.add(resident)
    return resident


async def add_report(db: Database, reference: str, created_at: datetime, **values: Any) -> Report:
    fields: dict[str, Any] = {
        "kind": "need",
        "channel": "telegram",
        "language": "ka",
        "municipality": "marneuli",
        "category": "water",
        "text": "No water in the village",
        "anonymous": True,
    }
    fields.update(values)
    async with db.transaction() as session:
        report = Report(reference=reference, created_at=created_at, updated_at=created_at, **fields)
        session.add(report)
    return report


async def export(db: Database, tmp_path: Path, fmt: str, flt: ExportFilter | None = None) -> Path:
    out = tmp_path / f"reports.{fmt}"
    await write_export(db, flt or ExportFilter(), CONTENT, fmt, out)
    return out


async def csv_rows(db: Database, tmp_path: Path, flt: ExportFilter | None = None) -> list[dict]:
    out = await export(db, tmp_path, "csv", flt)
    with open(out, encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def shown(cell: Cell) -> str | None:
    """What Excel shows: it decodes OOXML's _x000D_ escapes, which openpyxl leaves as is."""
    return unescape(cell.value) if isinstance(cell.value, str) else cell.value


async def references(db: Database, flt: ExportFilter) -> list[str]:
    return [row["reference"] async for row in export_rows(db, flt, CONTENT)]


async def test_csv_opens_in_excel_as_utf8_with_every_language_intact(
    db: Database, tmp_path: Path
) -> None:
    for number, (language, text) in enumerate(TEXTS.items(), start=1):
        await add_report(
            db, f"N-2026-00000{number}", utc(2026, 3, 1, 8, number), language=language, text=text
        )

    out = await export(db, tmp_path, "csv")
    raw = out.read_bytes()

    assert raw.startswith(BOM)
    lines = raw[len(BOM) :].split(b"\r\n")
    assert lines[0].decode() == ",".join(COLUMNS)
    assert lines[-1] == b""  # every row, the last included, ends with CRLF
    assert len(lines) == 1 + len(TEXTS) + 1
    rows = await csv_rows(db, tmp_path)
    assert {row["language"]: row["text"] for row in rows} == TEXTS


async def test_a_row_shows_tbilisi_time_place_names_media_and_location(
    db: Database, tmp_path: Path
) -> None:
    await add_report(
        db,
        "N-2026-000001",
        utc(2026, 3, 1, 21, 30),
        municipality="marneuli",
        category="roads",
        media=[{"type": "photo", "file_id": "AgAD1"}, {"type": "voice", "file_id": "AwAD2"}],
        latitude=41.4759,
        longitude=44.8089,
        location_municipality="bolnisi",
        gender="female",
        age_group="35_54",
        status="in_progress",
    )
    await add_report(
        db,
        "N-2026-000002",
        utc(2026, 3, 2, 6, 0),
        municipality="atlantis",
        latitude=41.5,
        longitude=44.25,
        category=None,
    )
    await add_report(db, "Q-2026-000003", utc(2026, 3, 2, 7, 0), kind="dcfta", municipality=None)

    first, second, third = await csv_rows(db, tmp_path)

    assert first == {
        "reference": "N-2026-000001",
        "created": "2026-03-02 01:30",
        "kind": "need",
        "category": "roads",
        "municipality": "Marneuli",
        "language": "ka",
        "channel": "telegram",
        "text": "No water in the village",
        "media_ids": "AgAD1 AwAD2",
        "location": "41.475900,44.808900 (near Bolnisi)",
        "status": "in_progress",
        "resident": "",
        "shared_by_name": "no",
        "name": "",
        "gender": "female",
        "age_group": "35_54",
        "answer": "",
        "followup": "",
    }
    assert second["municipality"] == "atlantis"  # an unknown code is shown as it is
    assert second["location"] == "41.500000,44.250000"
    assert second["category"] == ""
    assert second["media_ids"] == ""
    assert (third["kind"], third["municipality"], third["location"]) == ("dcfta", "", "")


@pytest.mark.parametrize("value", [*FORMULAS, "'already quoted", "1+1", "a=b"])
def test_neutralise_quotes_only_what_a_spreadsheet_would_run(value: str) -> None:
    expected = "'" + value if value[0] in "=+-@\t\r" else value
    assert neutralise(value) == expected


async def test_formulas_residents_type_stay_text_in_csv(db: Database, tmp_path: Path) -> None:
    for number, text in enumerate(FORMULAS, start=1):
        await add_report(db, f"N-2026-00000{number}", utc(2026, 3, 1, 8, number), text=text)
    await add_report(db, "N-2026-000010", utc(2026, 3, 1, 9), anonymous=False, shared_name="=1+2")

    rows = await csv_rows(db, tmp_path)

    assert [row["text"] for row in rows[:-1]] == ["'" + text for text in FORMULAS]
    assert rows[-1]["name"] == "'=1+2"


async def test_formulas_residents_type_stay_text_in_xlsx(db: Database, tmp_path: Path) -> None:
    for number, text in enumerate(FORMULAS, start=1):
        await add_report(db, f"N-2026-00000{number}", utc(2026, 3, 1, 8, number), text=text)
    await add_report(db, "N-2026-000010", utc(2026, 3, 1, 9), anonymous=False, shared_name="@Nino")

    out = await export(db, tmp_path, "xlsx")
    sheet = openpyxl.load_workbook(out)["reports"]
    grid = list(sheet.iter_rows())

    assert [cell.value for cell in grid[0]] == list(COLUMNS)
    assert all(cell.font.b for cell in grid[0])
    assert sheet.freeze_panes == "A2"
    text = COLUMNS.index("text")
    assert [shown(row[text]) for row in grid[1:-1]] == ["'" + value for value in FORMULAS]
    assert grid[-1][COLUMNS.index("name")].value == "'@Nino"
    cells = [cell for row in grid for cell in row]
    assert cells and all(cell.data_type != "f" for cell in cells)
    assert all(cell.value is None or isinstance(cell.value, str) for cell in cells)


async def test_jsonl_keeps_what_residents_wrote_untouched(db: Database, tmp_path: Path) -> None:
    typed = [*FORMULAS, TEXTS["ka"], TEXTS["ru"]]
    for number, text in enumerate(typed, start=1):
        await add_report(db, f"N-2026-00000{number}", utc(2026, 3, 1, 8, number), text=text)

    out = await export(db, tmp_path, "jsonl")
    raw = out.read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines(keepends=False) if line]

    assert not raw.startswith(BOM)
    assert TEXTS["ka"].encode() in raw  # readable, not \\u escapes
    assert raw.count(b"\n") == len(typed)
    assert [row["text"] for row in rows] == typed
    assert all(list(row) == list(COLUMNS) for row in rows)


async def test_since_and_until_are_whole_days_in_tbilisi(db: Database) -> None:
    await add_report(db, "N-1-last-minute", utc(2026, 3, 1, 19, 59))  # 1 March 23:59 Tbilisi
    await add_report(db, "N-2-midnight", utc(2026, 3, 1, 20, 0))  # 2 March 00:00 Tbilisi
    await add_report(db, "N-2-night", utc(2026, 3, 1, 21, 30))  # 2 March 01:30 Tbilisi
    await add_report(db, "N-2-late", utc(2026, 3, 2, 19, 59, 59))  # 2 March 23:59:59
    await add_report(db, "N-3-midnight", utc(2026, 3, 2, 20, 0))  # 3 March 00:00 Tbilisi

    march_2 = ExportFilter(since=date(2026, 3, 2), until=date(2026, 3, 2))
    assert await references(db, march_2) == ["N-2-midnight", "N-2-night", "N-2-late"]
    assert await references(db, ExportFilter(until=date(2026, 3, 1))) == ["N-1-last-minute"]
    assert await references(db, ExportFilter(since=date(2026, 3, 3))) == ["N-3-midnight"]
    assert len(await references(db, ExportFilter())) == 5


async def test_filters_by_municipality_and_kind(db: Database, tmp_path: Path) -> None:
    await add_report(db, "N-marneuli", utc(2026, 3, 1, 8), municipality="marneuli")
    await add_report(db, "N-ninotsminda", utc(2026, 3, 1, 9), municipality="ninotsminda")
    await add_report(db, "Q-marneuli", utc(2026, 3, 1, 10), municipality="marneuli", kind="dcfta")

    assert await references(db, ExportFilter(municipality="marneuli")) == [
        "N-marneuli",
        "Q-marneuli",
    ]
    assert await references(db, ExportFilter(kind="dcfta")) == ["Q-marneuli"]
    both = ExportFilter(municipality="marneuli", kind="need")
    assert await references(db, both) == ["N-marneuli"]
    assert await write_export(db, both, CONTENT, "csv", tmp_path / "one.csv") == 1
    with pytest.raises(ValueError, match="kind"):
        ExportFilter(kind="needs")


async def test_rows_come_oldest_first_and_in_insertion_order_on_ties(db: Database) -> None:
    same = utc(2026, 3, 1, 8)
    await add_report(db, "N-later", utc(2026, 3, 1, 9))
    await add_report(db, "N-tie-first", same)
    await add_report(db, "N-tie-second", same)

    assert await references(db, ExportFilter()) == ["N-tie-first", "N-tie-second", "N-later"]


async def test_name_is_shown_only_when_shared_by_name(db: Database, tmp_path: Path) -> None:
    await add_report(db, "N-named", utc(2026, 3, 1, 8), anonymous=False, shared_name="Nino B.")
    await add_report(db, "N-anonymous", utc(2026, 3, 1, 9), anonymous=True, shared_name="Nino B.")

    named, anonymous = await csv_rows(db, tmp_path)

    assert (named["shared_by_name"], named["name"]) == ("yes", "Nino B.")
    assert (anonymous["shared_by_name"], anonymous["name"]) == ("no", "")


async def test_pseudonym_is_stable_per_resident_and_distinct_across_them(
    db: Database, tmp_path: Path
) -> None:
    nino = await add_resident(db)
    aram = await add_resident(db, language="hy")
    await add_report(db, "N-nino-1", utc(2026, 3, 1, 8), resident_id=nino.id)
    await add_report(db, "N-aram-1", utc(2026, 3, 1, 9), resident_id=aram.id, language="hy")
    await add_report(db, "N-nino-2", utc(2026, 3, 1, 10), resident_id=nino.id)

    rows = {row["reference"]: row["resident"] for row in await csv_rows(db, tmp_path)}

    assert rows["N-nino-1"] == rows["N-nino-2"] == nino.pseudonym
    assert rows["N-aram-1"] == aram.pseudonym
    assert rows["N-nino-1"] != rows["N-aram-1"]


async def test_an_erased_residents_report_stays_without_pseudonym(
    db: Database, tmp_path: Path
) -> None:
    leaving = await add_resident(db)
    staying = await add_resident(db)
    await add_report(
        db,
        "N-erased",
        utc(2026, 3, 1, 8),
        resident_id=leaving.id,
        anonymous=False,
        shared_name="Leyla",
        gender="female",
    )
    await add_report(db, "N-kept", utc(2026, 3, 1, 9), resident_id=staying.id)
    async with db.transaction() as session:  # what "erase my data" does
        await queries.anonymise_reports(session, leaving.id)
        await session.delete(await session.get(Resident, leaving.id))

    erased, kept = await csv_rows(db, tmp_path)

    assert erased["reference"] == "N-erased"
    assert erased["text"] == "No water in the village"
    assert (erased["resident"], erased["name"], erased["gender"]) == ("", "", "")
    assert erased["shared_by_name"] == "no"
    assert kept["resident"] == staying.pseudonym


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
async def test_exports_into_an_open_binary_file(db: Database, fmt: str) -> None:
    await add_report(db, "N-2026-000001", utc(2026, 3, 1, 8), text=TEXTS["hy"])
    out = io.BytesIO()

    assert await write_export(db, ExportFilter(), CONTENT, fmt, out) == 1

    assert not out.closed  # the caller's file is theirs to close
    data = out.getvalue()
    if fmt == "xlsx":
        sheet = openpyxl.load_workbook(io.BytesIO(data))["reports"]
        assert sheet.cell(row=2, column=COLUMNS.index("text") + 1).value == TEXTS["hy"]
    else:
        assert TEXTS["hy"].encode() in data
        assert data.startswith(BOM) == (fmt == "csv")


async def test_unknown_format_is_refused_before_anything_is_written(
    db: Database, tmp_path: Path
) -> None:
    out = tmp_path / "reports.ods"
    with pytest.raises(ValueError, match="ods"):
        await write_export(db, ExportFilter(), CONTENT, "ods", out)
    assert not out.exists()


async def test_an_empty_export_still_has_its_header(db: Database, tmp_path: Path) -> None:
    out = await export(db, tmp_path, "csv", ExportFilter(kind="dcfta"))
    assert out.read_bytes() == BOM + ",".join(COLUMNS).encode() + b"\r\n"


async def test_residents_texts_are_not_logged(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await add_report(
        db,
        "N-2026-000001",
        utc(2026, 3, 1, 8),
        text=TEXTS["az"],
        anonymous=False,
        shared_name="Leyla",
    )
    with caplog.at_level(logging.DEBUG):
        assert await write_export(db, ExportFilter(), CONTENT, "csv", tmp_path / "r.csv") == 1
    assert TEXTS["az"] not in caplog.text
    assert "Leyla" not in caplog.text


async def test_a_long_export_arrives_whole_and_in_order(db: Database, tmp_path: Path) -> None:
    count = 1201  # more than two batches of the stream
    async with db.transaction() as session:
        session.add_all(
            Report(
                reference=f"N-2026-{n:06d}",
                kind="need",
                channel="telegram",
                language="ru",
                text=f"report {n}",
                created_at=utc(2026, 1, 1 + n // 100, n % 24, n % 60),
            )
            for n in range(count)
        )

    out = tmp_path / "all.jsonl"
    assert await write_export(db, ExportFilter(), CONTENT, "jsonl", out) == count

    created = [json.loads(line)["created"] for line in out.read_text("utf-8").splitlines()]
    assert len(created) == count
    assert created == sorted(created)
