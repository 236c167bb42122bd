"""The hot path's array literals read back as the values they were made of, on a real server."""

from __future__ import annotations

import math

import psycopg

from pgqueue.worker import arrays

AWKWARD_TEXTS = ['plain', '', 'NULL', 'null', None, 'a"quote', 'back\\slash', '\\"both\\"', '{braces}',
                 'comma,separated', ' spaces ', 'new\nline\ttab', 'ünïcødé ✓', '{"json": [1, "x"]}',
                 '\\', '"']


def read_back(conn: psycopg.Connection, literal: str, cast: str) -> list:
    with psycopg.RawCursor(conn) as cur:
        cur.execute(f"SELECT $1::{cast}", [literal])
        return cur.fetchone()[0]


def test_texts_read_back_exactly_with_nulls_apart_from_the_word_null(admin) -> None:
    assert read_back(admin, arrays.texts(AWKWARD_TEXTS), "text[]") == AWKWARD_TEXTS


def test_numbers_and_booleans_read_back(admin) -> None:
    ids = [1, 0, -5, 9_223_372_036_854_775_807, None]
    assert read_back(admin, arrays.bigints(ids), "bigint[]") == ids
    floats = [0.0, 1.5, 1e-300, 123456.789, None]
    assert read_back(admin, arrays.float8s(floats), "float8[]") == floats
    special = read_back(admin, arrays.float8s([math.inf, -math.inf, math.nan]), "float8[]")
    assert special[:2] == [math.inf, -math.inf] and math.isnan(special[2])
    assert read_back(admin, arrays.booleans([True, False, None]), "boolean[]") == [True, False, None]


def test_an_empty_batch_is_an_empty_array(admin) -> None:
    assert read_back(admin, arrays.bigints([]), "bigint[]") == []
    assert read_back(admin, arrays.texts([]), "text[]") == []


def test_unnest_lines_the_arrays_up_as_job_finish_reads_them(admin) -> None:
    with psycopg.RawCursor(admin) as cur:
        cur.execute("SELECT * FROM unnest($1::bigint[], $2::text[], $3::boolean[])",
                    [arrays.bigints([7, 8]), arrays.texts(['x"y', None]), arrays.booleans([False, True])])
        assert cur.fetchall() == [(7, 'x"y', False), (8, None, True)]
