"""Load the project's SQL files, render their identifiers and bind their ``:name`` parameters.

SQL files name parameters as ``:name``; values are always passed to the driver as bound
parameters in the driver's own style (``?`` for DuckDB, ``%(name)s`` for psycopg2), never
formatted into the text. Identifiers (``$table``, ``$columns``, ...) come from the feature
spec, validated and quoted there (:meth:`ecat_tasks.spec.FeatureSpec.sql_identifiers`).
Switching warehouse engine is a connection change, not a SQL change.
"""

from __future__ import annotations

import re
from string import Template
from typing import TYPE_CHECKING, Any, Mapping

from ecat_tasks.config import REPO_ROOT

if TYPE_CHECKING:  # pragma: no cover
    from ecat_tasks.spec import FeatureSpec

SQL_DIR = REPO_ROOT / "sql"
_COMMENT = re.compile(r"--[^\n]*")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def load_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} not found")
    return path.read_text()


def render_sql(name: str, spec: "FeatureSpec") -> str:
    """A SQL file with its ``$identifier`` placeholders filled from the spec (quoted identifiers only)."""
    try:
        return Template(load_sql(name)).substitute(spec.sql_identifiers())
    except (KeyError, ValueError) as exc:
        raise ValueError(f"SQL file {name}.sql uses a placeholder the feature spec does not provide: {exc}") from exc


def bind(sql: str, params: Mapping[str, Any], paramstyle: str) -> tuple[str, Any]:
    """Rewrite ``:name`` placeholders into ``paramstyle`` and return (sql, parameters)."""
    sql = _COMMENT.sub("", sql).strip()
    names = _PARAM.findall(sql)
    missing = sorted(set(names) - set(params))
    if missing:
        raise KeyError(f"SQL parameters without a value: {missing}")
    if paramstyle == "qmark":
        return _PARAM.sub("?", sql), [params[n] for n in names]
    if paramstyle == "numeric":
        counter = iter(range(1, len(names) + 1))
        return _PARAM.sub(lambda m: f"${next(counter)}", sql), [params[n] for n in names]
    if paramstyle == "pyformat":
        return _PARAM.sub(lambda m: f"%({m.group(1)})s", sql), {n: params[n] for n in names}
    if paramstyle == "named":
        return sql, {n: params[n] for n in names}
    raise ValueError(f"unsupported DB-API paramstyle {paramstyle!r}")


def paramstyle_of(connection: Any) -> str:
    """The DB-API paramstyle of a connection object's driver module."""
    module = type(connection).__module__.split(".")[0]
    if module == "duckdb":
        return "qmark"
    driver = __import__(module)
    return getattr(driver, "paramstyle", "qmark")
