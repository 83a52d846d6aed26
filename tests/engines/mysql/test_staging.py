"""The staging filter (``engines/mysql/staging.py``): a dump loaded into a staged or scratch
database never acts on the original. Events are created disabled (their statuses kept for
the swap), qualifiers in trigger, routine and event names are re-pointed at the staged
database; nothing else of the dump changes, strings and comments least of all, and rows
pass through unread. The real-server side is in ``test_restore_exact_staging.py``; here, the
filter on dump texts as ``mariadb-dump``/``mysqldump`` write them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from strongroom.engines.mysql import staging
from strongroom.engines.mysql.qualifiers import retarget_statement
from strongroom.engines.mysql.staging import Staging, with_status
from strongroom.errors import RestoreFailed

STAGED = "shop_sr_0a1b2c3d"
HEAD = (
    b"/*M!999999\\- enable the sandbox mode */ \n"
    b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n"
    b"--\n-- Host: 127.0.0.1    Database: shop\n"
    b"/*!40101 SET NAMES utf8mb4 */;\n"
    b"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n\n"
)


def _event(
    head: bytes, *, mode: bytes = b"STRICT_TRANS_TABLES", charset: bytes = b"utf8mb4"
) -> bytes:
    """An event as ``mariadb-dump --events`` writes it; ``head``: from ``EVENT`` on."""
    return (
        b"/*!50106 DROP EVENT IF EXISTS `e` */;\nDELIMITER ;;\n"
        b"/*!50003 SET character_set_client  = " + charset + b" */ ;;\n"
        b"/*!50003 SET sql_mode              = '" + mode + b"' */ ;;\n"
        b"/*!50003 SET @saved_time_zone      = @@time_zone */ ;;\n"
        b"/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`%`*/ /*!50106 " + head + b"\n*/ ;;\n"
        b"/*!50003 SET sql_mode              = @saved_sql_mode */ ;;\n"
        b"/*!50003 SET character_set_client  = @saved_cs_client */ ;;\n"
        b"DELIMITER ;\n"
    )


def _trigger(text: bytes, *, mode: bytes = b"STRICT_TRANS_TABLES") -> bytes:
    """A trigger as the dump writes it; ``text``: from ``TRIGGER`` on."""
    return (
        b"/*!50003 SET sql_mode              = '" + mode + b"' */ ;\nDELIMITER ;;\n"
        b"/*!50003 CREATE*/ /*!50017 DEFINER=`app`@`%`*/ /*!50003 " + text + b" */;;\n"
        b"DELIMITER ;\n/*!50003 SET sql_mode              = @saved_sql_mode */ ;\n"
    )


def _routine(text: bytes) -> bytes:
    """A routine as the dump writes it; ``text``: from ``PROCEDURE``/``FUNCTION`` on."""
    return (
        b"/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES' */ ;\nDELIMITER ;;\n"
        b"CREATE DEFINER=`app`@`%` " + text + b" ;;\nDELIMITER ;\n"
    )


def _rows(table: bytes, rows: list[bytes], *, one_line: bool = False) -> bytes:
    """A table's rows: MariaDB's dump writes one per line, MySQL's all on one line."""
    if one_line:
        return b"INSERT INTO `" + table + b"` VALUES " + b",".join(rows) + b";\n"
    return b"INSERT INTO `" + table + b"` VALUES\n" + b",\n".join(rows) + b";\n"


def _run(dump: bytes, piece: int | None = None) -> tuple[bytes, Staging]:
    filter_ = Staging(STAGED)
    size = piece or len(dump) or 1
    out = b"".join(filter_.rewrite(dump[i : i + size] for i in range(0, len(dump), size)))
    return out, filter_


def _same_in_any_pieces(dump: bytes) -> tuple[bytes, Staging]:
    whole, filter_ = _run(dump)
    for piece in (1, 2, 7, 64):
        assert _run(dump, piece)[0] == whole, piece
    return whole, filter_


# --- events ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("clause", "status", "disabled"),
    [
        (b"ON COMPLETION PRESERVE ENABLE COMMENT 'ENABLE me' DO", "ENABLED", None),
        (b"ON COMPLETION NOT PRESERVE DISABLE DO", "DISABLED", None),
        (b"ON COMPLETION NOT PRESERVE DISABLE ON SLAVE DO", "SLAVESIDE_DISABLED", None),
        (b"ON COMPLETION NOT PRESERVE DISABLE ON REPLICA DO", "SLAVESIDE_DISABLED", None),
        # no status clause (the default is enabled): DISABLE goes in before COMMENT or DO
        (
            b"COMMENT 'x' DO",
            "ENABLED",
            b"DISABLE COMMENT 'x' DO",
        ),
        (b"ON COMPLETION PRESERVE DO", "ENABLED", b"ON COMPLETION PRESERVE DISABLE DO"),
    ],
)
def test_every_event_is_created_disabled_and_its_status_kept(clause, status, disabled):
    head = b"EVENT `e` ON SCHEDULE EVERY 1 SECOND STARTS '2020-01-01 00:00:00' " + clause
    body = b" INSERT INTO shop.audit VALUES ('ENABLE', \"DISABLE\") /* ENABLE */"
    dump = HEAD + _event(head + body)
    out, filter_ = _same_in_any_pieces(dump)
    expected = disabled or (
        clause.replace(b"ENABLE COMMENT", b"DISABLE COMMENT")
        .replace(b" ON SLAVE", b"")
        .replace(b" ON REPLICA", b"")
    )
    assert out == HEAD + _event(head.replace(clause, expected) + body)
    assert filter_.statuses() == {"e": status}


def test_an_events_head_over_several_lines_and_in_odd_dialects():
    # a name over two lines, ANSI_QUOTES ("…" is a name), NO_BACKSLASH_ESCAPES ('\' ends)
    head = (
        b'EVENT "we\nird ""e""" ON SCHEDULE EVERY \'1:30\' HOUR_MINUTE'
        b" STARTS '2020-01-01 00:00:00'"
        b" ON COMPLETION PRESERVE ENABLE COMMENT 'a\\' DO SELECT 1"
    )
    mode = b"ANSI_QUOTES,NO_BACKSLASH_ESCAPES"
    out, filter_ = _same_in_any_pieces(HEAD + _event(head, mode=mode))
    assert out == HEAD + _event(head.replace(b"ENABLE", b"DISABLE"), mode=mode)
    assert filter_.statuses() == {'we\nird "e"': "ENABLED"}
    # latin1 text around the name (the statement's own character set)
    head = (
        b"EVENT `caf\xe9` ON SCHEDULE AT '2035-01-01 00:00:00' ON COMPLETION PRESERVE ENABLE"
        b" DO SELECT 'd\xe9j\xe0'"
    )
    out, filter_ = _same_in_any_pieces(HEAD + _event(head, charset=b"latin1"))
    assert out == HEAD + _event(head.replace(b"ENABLE", b"DISABLE"), charset=b"latin1")
    assert filter_.statuses() == {"café": "ENABLED"}


def test_statuses_come_from_the_dump_else_from_what_the_backup_recorded(caplog):
    dump = HEAD + _event(
        b"EVENT `Tick` ON SCHEDULE EVERY 1 DAY ON COMPLETION PRESERVE ENABLE DO SELECT 1"
    )
    recorded = {"tick": "DISABLED", "gone": "SLAVESIDE_DISABLED"}
    filter_ = Staging(STAGED, recorded)
    assert b"DISABLE DO" in b"".join(filter_.rewrite([dump]))
    assert filter_.statuses() == {"tick": "ENABLED", "gone": "SLAVESIDE_DISABLED"}
    assert "changed from DISABLED to ENABLED while the backup ran" in caplog.text


def test_with_status_gives_a_captured_event_its_status_back():
    shown = (
        "CREATE DEFINER=`app`@`%` EVENT `tick` ON SCHEDULE EVERY 1 SECOND STARTS"
        " '2020-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE COMMENT 'heartbeat ✓ ENABLE'"
        " DO INSERT INTO audit VALUES ('DISABLE')"
    ).encode()
    enabled = with_status(shown, charset="utf8mb4", sql_mode="", status="ENABLED")
    assert enabled == shown.replace(b"PRESERVE DISABLE", b"PRESERVE ENABLE")
    slave = with_status(shown, charset="utf8mb4", sql_mode="", status="SLAVESIDE_DISABLED")
    assert slave == shown.replace(b"PRESERVE DISABLE", b"PRESERVE DISABLE ON SLAVE")
    assert with_status(shown, charset="utf8mb4", sql_mode="", status="DISABLED") == shown
    with pytest.raises(RestoreFailed, match="cannot read"):
        with_status(b"CREATE VIEW v AS SELECT 1", charset="utf8mb4", sql_mode="", status="ENABLED")


# --- qualified object names --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "staged"),
    [
        (
            b"TRIGGER `shop`.`t_bi` BEFORE INSERT ON `shop`.`t` FOR EACH ROW SET NEW.s = 'shop.t'",
            b"TRIGGER `shop_sr_0a1b2c3d`.`t_bi` BEFORE INSERT ON `shop_sr_0a1b2c3d`.`t`"
            b" FOR EACH ROW SET NEW.s = 'shop.t'",
        ),
        (  # unquoted stays unquoted; spaces, comments and the body are kept
            b"TRIGGER shop . t_bi /* shop.x */ AFTER UPDATE ON shop.t FOR EACH ROW\n"
            b"  INSERT INTO shop.audit VALUES (1)",
            b"TRIGGER shop_sr_0a1b2c3d . t_bi /* shop.x */ AFTER UPDATE ON shop_sr_0a1b2c3d.t"
            b" FOR EACH ROW\n  INSERT INTO shop.audit VALUES (1)",
        ),
        (  # only the table qualified, over two lines
            b"TRIGGER t_bi BEFORE DELETE\n ON `shop`.t FOR EACH ROW SET @x = 1",
            b"TRIGGER t_bi BEFORE DELETE\n ON `shop_sr_0a1b2c3d`.t FOR EACH ROW SET @x = 1",
        ),
        (  # nothing qualified: unchanged
            b"TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW INSERT INTO shop.t2 VALUES (1)",
            None,
        ),
    ],
)
def test_a_triggers_name_and_table_are_re_pointed_at_the_staged_database(written, staged):
    out, _ = _same_in_any_pieces(HEAD + _trigger(written))
    assert out == HEAD + _trigger(staged or written)


def test_ansi_quotes_and_routines_and_events_with_qualified_names():
    written = b'TRIGGER "shop"."t_bi" BEFORE INSERT ON "shop"."t" FOR EACH ROW SET NEW.s = 1'
    out, _ = _same_in_any_pieces(HEAD + _trigger(written, mode=b"ANSI_QUOTES"))
    assert out == HEAD + _trigger(
        written.replace(b'"shop"', b'"shop_sr_0a1b2c3d"'), mode=b"ANSI_QUOTES"
    )
    for written in (
        b"PROCEDURE `shop`.`p`(IN x INT)\nBEGIN\n  SELECT shop.f(x);\nEND",
        b"FUNCTION IF NOT EXISTS shop.f(x INT) RETURNS INT DETERMINISTIC RETURN x",
    ):
        out, _ = _same_in_any_pieces(HEAD + _routine(written))
        moved = written.replace(b"`shop`.`p`", b"`shop_sr_0a1b2c3d`.`p`")
        moved = moved.replace(b"EXISTS shop.f", b"EXISTS shop_sr_0a1b2c3d.f")
        assert out == HEAD + _routine(moved)
    head = b"EVENT `shop`.`e` ON SCHEDULE EVERY 1 DAY ON COMPLETION PRESERVE DISABLE DO SELECT 1"
    out, _ = _same_in_any_pieces(HEAD + _event(head))
    assert out == HEAD + _event(head.replace(b"`shop`", b"`shop_sr_0a1b2c3d`"))


def test_retarget_rewrites_the_staged_name_as_the_filter_wrote_it():
    def retarget(text: bytes, target: str, keywords: frozenset[str] | None) -> bytes:
        return retarget_statement(text, "utf8mb4", STAGED, target, keywords=keywords)

    text = (
        b"CREATE TRIGGER shop_sr_0a1b2c3d . t BEFORE INSERT ON `shop_sr_0a1b2c3d`.t"
        b" FOR EACH ROW SET @x = 'shop_sr_0a1b2c3d.x' /* shop_sr_0a1b2c3d.y */"
    )
    words = frozenset({"ORDER"})
    assert retarget(text, "shop", words) == (  # strings and comments are kept
        b"CREATE TRIGGER shop . t BEFORE INSERT ON `shop`.t"
        b" FOR EACH ROW SET @x = 'shop_sr_0a1b2c3d.x' /* shop_sr_0a1b2c3d.y */"
    )
    assert retarget(text, "order", words).startswith(b"CREATE TRIGGER `order` . t")
    assert retarget(text, "shop", None).startswith(b"CREATE TRIGGER `shop` . t")  # unknown
    assert retarget(text, "a`b", words).startswith(b"CREATE TRIGGER `a``b` . t")


# --- what is never touched ----------------------------------------------------------------------
def test_bodies_strings_comments_and_rows_are_never_touched():
    lookalike = (
        b"/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`%`*/ /*!50106 EVENT `x` ON SCHEDULE"
        b" EVERY 1 DAY ON COMPLETION PRESERVE ENABLE DO SELECT 1 */ ;;"
    )
    body = (
        b"PROCEDURE `p`()\nBEGIN\n"
        # a statement of the body that creates an event: code, but not a dump statement
        b"CREATE EVENT shop.e ON SCHEDULE EVERY 1 DAY ENABLE DO SELECT 1;\n"
        b"CREATE TRIGGER shop.t BEFORE INSERT ON shop.x FOR EACH ROW SET @a = 1;\n"
        b"INSERT INTO t VALUES ('it''s\n" + lookalike + b"\n');\n"  # a string over lines
        b"/* a comment\n" + lookalike + b"\n*/ -- shop.t\nEND"
    )
    rows = [
        b"(1,'" + lookalike.replace(b"\n", b"\\n") + b"')",
        b"(2,'a;\\nb'),(3,'x\\');')",
        b"(4,'" + b"ab" * 4000 + b"')",
    ]
    dump = (
        HEAD
        + _rows(b"t", rows)
        + _rows(b"u", rows, one_line=True)
        + _routine(body)
        + b"/* "
        + lookalike
        + b" */\n"
        + _rows(b"v", rows)
    )
    out, filter_ = _same_in_any_pieces(dump)
    assert out == dump
    assert filter_.statuses() == {}


def test_rows_pass_through_unread_in_the_pieces_they_came_in(monkeypatch):
    seen: list[bytes] = []
    follow = staging._Tracker.feed

    def spy(self: Any, line: bytes) -> None:
        seen.append(line)
        follow(self, line)

    monkeypatch.setattr(staging._Tracker, "feed", spy)
    rows = [b"(%d,'row %d ENABLE',0x%s)" % (i, i, b"ab" * 50) for i in range(2000)]
    dump = HEAD + _rows(b"t", rows) + _rows(b"u", rows, one_line=True) + b"UNLOCK TABLES;\n"
    pieces = [dump[i : i + 4096] for i in range(0, len(dump), 4096)]
    out = list(Staging(STAGED).rewrite(pieces))
    assert b"".join(out) == dump
    assert not [line for line in seen if b"row " in line]  # not one row was lexed
    assert sum(len(line) for line in seen) < len(HEAD) + 100


def test_the_filter_is_linear_in_the_dump():
    row = b"(1,'" + b"x" * 200 + b"',0xabcdef)"
    dump = HEAD + _rows(b"t", [row] * 100_000) + _rows(b"u", [row] * 100_000, one_line=True)
    pieces = [dump[i : i + 65536] for i in range(0, len(dump), 65536)]
    clock = time.perf_counter()
    out = b"".join(Staging(STAGED).rewrite(pieces))
    took = time.perf_counter() - clock
    assert out == dump
    assert took < 0.5, f"{took:.2f} s for {len(dump) >> 20} MiB of rows"


def test_a_head_that_never_names_its_object_is_refused_before_it_is_sent(monkeypatch):
    monkeypatch.setattr(staging, "HEAD_LIMIT", 1000)
    dump = HEAD + _trigger(
        b"TRIGGER\n"
        + b"/* padding */\n" * 200
        + b"shop.t BEFORE INSERT ON shop.x FOR EACH ROW SET @a = 1"
    )
    sent: list[bytes] = []
    with pytest.raises(RestoreFailed, match="do not name the object"):
        for piece in Staging(STAGED).rewrite([dump]):
            sent.append(piece)
    assert b"TRIGGER" not in b"".join(sent)
    # an event whose status cannot be found is refused too
    dump = (
        HEAD + b"DELIMITER ;;\n/*!50106 CREATE*/ /*!50106 EVENT `e` ON SCHEDULE EVERY 1 DAY */ ;;\n"
    )
    with pytest.raises(RestoreFailed, match="status clause of event e"):
        b"".join(Staging(STAGED).rewrite([dump]))


# --- what a backup records ------------------------------------------------------------------------
def test_the_recorded_state_is_read_back_only_when_it_is_sound():
    state = {
        "schema": {"character_set": "latin1", "collation": "latin1_swedish_ci"},
        "events": {"tick": "ENABLED", "odd": "RUNNING", "x": 1},
    }
    assert staging.recorded_shape(state) == ("latin1", "latin1_swedish_ci")
    assert staging.recorded_events(state) == {"tick": "ENABLED"}
    bad = {"schema": {"character_set": "latin1; DROP DATABASE x", "collation": "c"}}
    assert staging.recorded_shape(bad) is None
    assert staging.recorded_shape(None) is None and staging.recorded_events({}) == {}
