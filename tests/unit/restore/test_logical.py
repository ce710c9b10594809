"""pg_restore's table of contents and selective restores (restore/logical.py)."""

from __future__ import annotations

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import logical

TOC = """;
; Archive created at 2026-11-21 20:01:50 UTC
;     dbname: src
;
; Selected TOC Entries:
;
2591; 0 0 ENCODING - ENCODING
2592; 0 0 STDSTRINGS - STDSTRINGS
2593; 0 0 SEARCHPATH - SEARCHPATH
2594; 1262 16384 DATABASE - src postgres
6; 2615 16385 SCHEMA - s2 postgres
221; 1259 16387 TABLE public t1 postgres
220; 1259 16386 SEQUENCE public t1_id_seq postgres
;\tdepends on: 221
2595; 0 0 SEQUENCE OWNED BY public t1_id_seq postgres
;\tdepends on: 220
222; 1259 16396 TABLE s2 We ird.T postgres
;\tdepends on: 6
224; 1259 16409 TABLE s2 t3 postgres
;\tdepends on: 6
223; 1259 16405 VIEW s2 v postgres
;\tdepends on: 221 221 6
2430; 2604 16390 DEFAULT public t1 id postgres
;\tdepends on: 221 220 221
2586; 0 16387 TABLE DATA public t1 postgres
;\tdepends on: 221
2587; 0 16396 TABLE DATA s2 We ird.T postgres
;\tdepends on: 222
2588; 0 16409 TABLE DATA s2 t3 postgres
;\tdepends on: 224
2596; 0 0 SEQUENCE SET public t1_id_seq postgres
;\tdepends on: 220
2432; 2606 16395 CONSTRAINT public t1 t1_pkey postgres
;\tdepends on: 221
2435; 2606 16403 CONSTRAINT s2 We ird.T We ird.T_pkey postgres
;\tdepends on: 222
2433; 1259 16404 INDEX s2 We ird.T_note_idx postgres
;\tdepends on: 222
2436; 2606 16412 FK CONSTRAINT s2 t3 t3_a_fkey postgres
;\tdepends on: 2435 224 222
"""
SESSION = {2591, 2592, 2593}


def test_parse_toc_reads_descs_and_dependencies():
    entries = {e.dump_id: e for e in logical.parse_toc(TOC)}
    assert entries[2586].desc == "TABLE DATA" and entries[2586].rest == "public t1 postgres"
    assert entries[2595].desc == "SEQUENCE OWNED BY"
    assert entries[2436].desc == "FK CONSTRAINT" and entries[2436].deps == (2435, 224, 222)
    assert entries[223].deps == (221, 221, 6)
    assert logical.find_schema_entry(list(entries.values()), "s2").dump_id == 6
    assert logical.find_schema_entry(list(entries.values()), "public") is None


def test_table_selection_brings_its_own_objects_only():
    entries = logical.parse_toc(TOC)
    chosen = logical.select_entries(entries, {221})
    assert chosen.missing == []
    # table, owned sequence (+ owned by, value), default, data, primary key
    assert chosen.ids == SESSION | {221, 220, 2595, 2596, 2430, 2586, 2432}
    listing = logical.render_list(entries, chosen.ids)
    assert listing.splitlines()[3] == "221; 1259 16387 TABLE public t1 postgres"


def test_table_selection_leaves_foreign_keys_to_other_tables_out():
    entries = logical.parse_toc(TOC)
    chosen = logical.select_entries(entries, {224, 6})
    assert 2436 not in chosen.ids and {224, 2588, 6} <= chosen.ids
    assert 222 not in chosen.ids


def test_schema_selection_reports_a_dependency_on_another_schema():
    entries = logical.parse_toc(TOC)
    in_s2 = {222, 224, 223, 2587, 2588, 2435, 2433, 2436}
    chosen = logical.select_entries(entries, in_s2 | {6})
    assert [(a.dump_id, b.dump_id) for a, b in chosen.missing] == [(223, 221)]
    without_view = logical.select_entries(entries, (in_s2 - {223}) | {6})
    assert without_view.missing == [] and 2436 in without_view.ids and 221 not in without_view.ids
