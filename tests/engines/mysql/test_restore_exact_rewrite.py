"""Issue 13, "must hold" for MySQL/MariaDB: the rewrite of qualifiers naming the source database
when a copy is restored under another name (``engines/mysql/qualifiers.py``): only qualifiers
naming the source change, following the SQL mode, the server and the target name; the
fingerprint normalizes qualifiers only."""

from __future__ import annotations

import pytest

from strongroom.engines.mysql.qualifiers import Scope, Unrewritable, requalify, requalify_statement
from tests.fixtures.mysql_app import PLACEHOLDER, normalize

# --- the rewrite itself (no server) ----------------------------------------------------------
SCOPE = Scope(
    fold_case=False,
    keywords=frozenset({"SELECT", "ORDER", "STATUS"}),
    objects=frozenset({"audit", "orders", "f", "t2", "products"}),
    columns=frozenset({"id", "what", "price"}),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unquoted, backquoted, spaced, three-part, a call, a column list, `db`.*
        ("INSERT INTO shop.audit (what) VALUES (1)", "INSERT INTO copy.audit (what) VALUES (1)"),
        (
            "SELECT `shop`.`audit`.id FROM `shop` . audit",
            "SELECT `copy`.`audit`.id FROM `copy` . audit",
        ),
        ("SELECT shop.f(1), shop.orders.id", "SELECT copy.f(1), copy.orders.id"),
        ("GRANT SELECT ON shop.* TO u", "GRANT SELECT ON copy.* TO u"),
        # strings, comments, variables, a user name and a longer name are kept
        (
            "SELECT 'shop.audit', \"shop.audit\", 'it''s shop.x', 'a\\'shop.x' -- shop.x\n",
            "SELECT 'shop.audit', \"shop.audit\", 'it''s shop.x', 'a\\'shop.x' -- shop.x\n",
        ),
        ("SELECT 1 # shop.audit\n/* shop.audit */", "SELECT 1 # shop.audit\n/* shop.audit */"),
        (
            "CREATE DEFINER=`shop`@`%` TRIGGER shop.t2 BEFORE INSERT ON shop.orders FOR EACH ROW"
            " SET @shop = @@session.shop + (SELECT COUNT(*) FROM shop.audit)",
            "CREATE DEFINER=`shop`@`%` TRIGGER copy.t2 BEFORE INSERT ON copy.orders FOR EACH ROW"
            " SET @shop = @@session.shop + (SELECT COUNT(*) FROM copy.audit)",
        ),
        (
            "SELECT shop_x.audit, xshop.audit, SHOP.audit",
            "SELECT shop_x.audit, xshop.audit, SHOP.audit",
        ),
        # executable comments are code
        ("SELECT 1 /*!50000 FROM shop.audit */", "SELECT 1 /*!50000 FROM copy.audit */"),
        # a table named like the database: the qualifier is told apart by what follows
        (
            "SELECT shop.id FROM shop JOIN shop.audit a ON a.id = shop.id",
            None,  # shop.id could be table.column: refused
        ),
        (
            "INSERT INTO shop.audit SELECT id FROM shop",
            "INSERT INTO copy.audit SELECT id FROM shop",
        ),
    ],
)
def test_only_qualifiers_naming_the_source_are_rewritten(text, expected):
    if expected is None:
        with pytest.raises(Unrewritable, match="could be either"):
            requalify(text, "shop", "copy", SCOPE)
    else:
        assert requalify(text, "shop", "copy", SCOPE) == expected


def test_the_rewrite_follows_the_sql_mode_the_server_and_the_target_name():
    # ANSI_QUOTES: "shop" is a name; without it, a string
    assert requalify('SELECT "shop".audit.id', "shop", "copy", SCOPE, sql_mode="ANSI_QUOTES") == (
        'SELECT "copy".audit.id'
    )
    # NO_BACKSLASH_ESCAPES: the backslash ends nothing, the string ends at the next quote
    text = "SELECT 'a\\', shop.audit.id"
    assert requalify(text, "shop", "copy", SCOPE, sql_mode="NO_BACKSLASH_ESCAPES") == (
        "SELECT 'a\\', copy.audit.id"
    )
    text = "SELECT 'a\\', shop.audit.id'"  # with backslash escapes: all one string
    assert requalify(text, "shop", "copy", SCOPE) == text
    # lower_case_table_names: case folds like the server does
    assert requalify("SELECT SHOP.audit.id", "shop", "copy", Scope(True)) == "SELECT copy.audit.id"
    # a target that is a keyword or not a plain name is quoted
    assert requalify("SELECT shop.audit.id", "shop", "order", SCOPE) == "SELECT `order`.audit.id"
    assert requalify("SELECT `shop`.audit.id", "shop", "a`b c", SCOPE) == "SELECT `a``b c`.audit.id"
    unknown = Scope(False, keywords=None)  # a server without information_schema.KEYWORDS
    assert requalify("SELECT shop.audit.id", "shop", "copy", unknown) == "SELECT `copy`.audit.id"
    # bytes in the statement's own charset; other bytes come back as they were
    latin1 = "INSERT INTO shop.audit VALUES ('é\x81')".encode("latin-1")
    out = requalify_statement(
        latin1, charset="latin1", sql_mode=None, source="shop", target="café", scope=SCOPE
    )
    assert out == "INSERT INTO café.audit VALUES ('é\x81')".encode("latin-1")
    # a charset without a codec: kept if the name is not there, else refused
    assert (
        requalify_statement(
            b"SELECT 1", charset="dec8", sql_mode=None, source="shop", target="x", scope=SCOPE
        )
        == b"SELECT 1"
    )
    with pytest.raises(Unrewritable, match="dec8"):
        requalify_statement(
            b"SELECT shop.audit.id",
            charset="dec8",
            sql_mode=None,
            source="shop",
            target="x",
            scope=SCOPE,
        )


def test_the_fingerprint_normalizes_qualifiers_only():
    text = "SELECT `db_1`.t.c, db_1 . t, 'db_1.t' /* db_1.t */ FROM db_1x.t, x.db_1"
    assert normalize(text, "db_1") == (
        f"SELECT `{PLACEHOLDER}`.t.c, {PLACEHOLDER} . t, 'db_1.t' /* db_1.t */ FROM db_1x.t, x.db_1"
    )
