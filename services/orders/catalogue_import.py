"""CSV import of the product catalogue (admin): each row creates the product of its SKU or updates
it (a SKU is matched whatever its case, and never changes). All or nothing: every row is checked
before any is written, and a file with a bad row changes nothing and answers each bad line's
reason. Importing the same file again changes nothing (and publishes nothing)."""
from __future__ import annotations

import csv
import itertools

from marshmallow import ValidationError
from sqlalchemy import func, select

from crmkit import csvfile
from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.errors import ValidationFailed
from crmkit.settings import Settings

from .db import Product
from .products import create_product, update_product
from .schemas import ProductImportRowSchema

MAX_ROWS = 20_000  # a catalogue, not a customer list: far beyond any one company's SKUs
ERRORS_SHOWN = 200

# Header → field; English and the names Chinese spreadsheets use.
_HEADERS = {
    "sku": ["sku", "code", "productcode", "编码", "产品编码", "物料编码", "型号"],
    "name": ["name", "productname", "名称", "产品名称", "品名"],
    "category": ["category", "productline", "line", "类别", "产品线", "分类"],
    "list_price": ["listprice", "price", "标准价", "价格", "单价", "目录价"],
    "unit_cost": ["unitcost", "cost", "成本", "单位成本"],
    "currency": ["currency", "币种", "货币"],
    "active": ["active", "在售", "启用"],
    "excluded_from_quota": ["excludedfromquota", "不计业绩", "不计入业绩"],
}
_LOOKUP = {alias: field for field, aliases in _HEADERS.items() for alias in aliases}
_FLAGS = {"true": True, "yes": True, "y": True, "1": True, "是": True,
          "false": False, "no": False, "n": False, "0": False, "否": False}
_row_schema = ProductImportRowSchema()


def _rows(content: bytes) -> tuple[list[tuple[int, dict]], dict]:
    encoding = csvfile.encoding_of(content)
    reader = csvfile.reader(content, encoding)
    try:
        header = next(reader, None) or []
        mapping = {i: _LOOKUP[csvfile.header_key(h)] for i, h in enumerate(header) if csvfile.header_key(h) in _LOOKUP}
        if not {"sku", "name", "list_price"} <= set(mapping.values()):
            raise ValidationFailed("the header needs sku, name and list_price columns",
                                   errors={"file": [f"known headers: {sorted(_HEADERS)} or their Chinese names"]})
        rows = []
        for values in itertools.islice(reader, MAX_ROWS + 1):
            if not any(v.strip() for v in values):
                continue
            raw = {}
            for i, value in enumerate(values):
                if i in mapping and value.strip() and mapping[i] not in raw:
                    raw[mapping[i]] = value.strip()
            rows.append((reader.line_num, raw))
    except csv.Error as exc:  # a cell over the csv module's limit, a stray NUL
        raise ValidationFailed(f"line {reader.line_num}: {exc}", errors={"file": [str(exc)]}) from None
    if len(rows) > MAX_ROWS:
        raise ValidationFailed(f"the file has more than {MAX_ROWS} rows", errors={"file": ["too many rows"]})
    return rows, mapping


def _parsed(raw: dict) -> dict:
    row = dict(raw)
    for flag in ("active", "excluded_from_quota"):
        if flag in row:
            value = _FLAGS.get(row[flag].casefold())
            if value is None:
                raise ValidationError({flag: ["true or false (是/否)"]})
            row[flag] = value
    return _row_schema.load(row)


def import_catalogue(uow: UnitOfWork, settings: Settings, principal: Principal, content: bytes) -> dict:
    rows, _ = _rows(content)
    if not rows:
        raise ValidationFailed("the file has no rows", errors={"file": ["empty"]})
    parsed, errors, seen = [], {}, {}
    for line, raw in rows:
        try:
            row = _parsed(raw)
        except ValidationError as exc:
            errors[str(line)] = exc.messages
            continue
        key = row["sku"].lower()
        if key in seen:
            errors[str(line)] = {"sku": [f"SKU {row['sku']} is on line {seen[key]} too"]}
            continue
        seen[key] = line
        parsed.append(row)
    if errors:
        shown = dict(itertools.islice(errors.items(), ERRORS_SHOWN))
        raise ValidationFailed(f"{len(errors)} rows cannot be imported; nothing was", errors={"rows": shown})
    existing = {p.sku.lower(): p for p in uow.session.execute(
        select(Product).where(func.lower(Product.sku).in_(list(seen))).with_for_update()).scalars()}
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for row in parsed:
        product = existing.get(row["sku"].lower())
        if product is None:
            create_product(uow, settings, principal, row)
            counts["created"] += 1
            continue
        changes = {k: v for k, v in row.items() if k != "sku"}
        before = product.version
        update_product(uow, settings, principal, product.id, changes, lambda _version: None)
        counts["updated" if product.version != before else "unchanged"] += 1
    return counts
