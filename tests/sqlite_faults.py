"""A writer's SQLite connection that fails where a full disk or an I/O error makes it fail, for tests of what a log
answers when its commit does not happen."""

from __future__ import annotations

import sqlite3
from typing import Any


class CommitFails:
    """`db`, except that COMMIT raises as SQLITE_IOERR does: after every row of the transaction went in (and after
    anything made from them meanwhile), so nothing of it may be acknowledged."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error (the test's)")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)
