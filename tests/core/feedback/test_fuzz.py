"""Malformed and adversarial exports: each ends in a one-line error that leaves the dataset
byte-identical, or in an import where every row is imported or quarantined with a reason.
Nothing else: no traceback, no lost row, no unbounded memory."""

import gzip
import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.core.feedback.dataset import QUARANTINE, Splits, add_batch
from rlhf.core.feedback.formats import NAMES, PAIRWISE, Reject, rating, votes_of
from rlhf.core.settings import Bounds, Limits, UserError

BOUNDS = Bounds(
    max_file_bytes=4 << 20, max_document_bytes=1 << 20, max_record_bytes=64 << 10, max_depth=32
)
LIMITS = Limits(max_quarantine_fraction=1.0, **BOUNDS.model_dump())


def trl(i: int = 0, **change) -> dict:
    return {"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}", **change}


def lines(*rows: object) -> bytes:
    """JSONL with two valid rows around the given ones (str and bytes go in as they are)."""
    out = [json.dumps(trl(100)).encode()]
    for r in rows:
        out.append(r if isinstance(r, bytes) else r.encode() if isinstance(r, str) else dumps(r))
    out.append(json.dumps(trl(101)).encode())
    return b"\n".join(out) + b"\n"


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def ls_task(**annotation) -> dict:
    return {
        "data": {"prompt": "q", "answer1": "a", "answer2": "b"},
        "annotations": [{"result": [{"type": "pairwise", "value": {"selected": "left"}}]}]
        if not annotation
        else [annotation],
    }


def summarize(**change) -> dict:
    return {
        "info": {"post": "p"},
        "summaries": [{"text": "s1"}, {"text": "s2"}],
        "choice": 0,
        **change,
    }


def csv_file(*body: bytes, header: bytes = b"prompt,chosen,rejected") -> bytes:
    return header + b"\r\n" + b"q,good,bad\r\n" + b"".join(body)


def parquet(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


BIG = 10**5000
SHP = {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1}
ALPACA = {"instruction": "i", "output_1": "a", "output_2": "b", "preference": 1}
CASES: dict[str, tuple[str, bytes | Callable[[Path], None]]] = {
    # JSON lines: unreadable lines
    "jsonl-bad-json": ("x.jsonl", lines('{"prompt": "q", "chosen": ')),
    "jsonl-bad-utf8": ("x.jsonl", lines(b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}')),
    "jsonl-bom-crlf": ("x.jsonl", b"\xef\xbb\xbf" + lines(trl(1)).replace(b"\n", b"\r\n")),
    "jsonl-array-line": ("x.jsonl", lines("[1, 2, 3]")),
    "jsonl-scalars": ("x.jsonl", lines("42", "null", '"text"', "true")),
    "jsonl-nested-10000": ("x.jsonl", lines('{"prompt": ' + nested(10_000) + "}")),
    "jsonl-nested-over-bound": ("x.jsonl", lines(trl(1, meta=json.loads(nested(40))))),
    "jsonl-huge-int-margin": (
        "x.jsonl",
        lines('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": ' + "9" * 5000 + "}"),
    ),
    "jsonl-margin-overflow": (
        "x.jsonl",
        lines('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1e400}'),
    ),
    "jsonl-margin-1e308": ("x.jsonl", lines(trl(1, margin=1e308), trl(2, margin=-1e308))),
    "jsonl-margin-nan": (
        "x.jsonl",
        lines('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": NaN}'),
    ),
    "jsonl-margin-string": ("x.jsonl", lines(trl(1, margin="lots"), trl(2, margin=[1]))),
    "jsonl-chosen-number": ("x.jsonl", lines(trl(1, chosen=3.5), trl(2, chosen=BIG % 10**20))),
    "jsonl-chosen-list-of-numbers": ("x.jsonl", lines(trl(1, chosen=[1, 2], rejected=[3]))),
    "jsonl-role-is-list": (
        "x.jsonl",
        lines(
            trl(
                1,
                prompt=[{"role": ["user"], "content": "q"}],
                chosen=[{"role": "assistant", "content": "a"}],
                rejected=[{"role": "assistant", "content": "b"}],
            )
        ),
    ),
    "jsonl-content-is-dict": (
        "x.jsonl",
        lines(
            trl(
                1,
                prompt=[{"role": "user", "content": {"t": 1}}],
                chosen=[{"role": "assistant", "content": "a"}],
                rejected=[{"role": "assistant", "content": "b"}],
            )
        ),
    ),
    "jsonl-messages-without-prompt-mismatch": (
        "x.jsonl",
        lines({"chosen": [{"role": "user", "content": "a"}], "rejected": [[1]]}),
    ),
    "jsonl-null-prompt": ("x.jsonl", lines(trl(1, prompt=None, chosen=None))),
    "jsonl-missing-rejected": ("x.jsonl", lines({"prompt": "q", "chosen": "a"})),
    "jsonl-chosen-equals-rejected": ("x.jsonl", lines(trl(1, rejected="good 1"))),
    "jsonl-empty-strings": ("x.jsonl", lines(trl(1, prompt="", chosen=" ", rejected="\n"))),
    "jsonl-lone-surrogate": (
        "x.jsonl",
        lines('{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}'),
    ),
    "jsonl-nul-characters": ("x.jsonl", lines(trl(1, chosen="a\x00b"))),
    "jsonl-line-over-record-bound": ("x.jsonl", lines(trl(1, chosen="y" * (200 << 10)))),
    "jsonl-field-over-max-chars": ("x.jsonl", lines(trl(1, chosen="y" * 30_000))),
    "jsonl-truncated-tail": ("x.jsonl", lines(trl(1)) + b'{"prompt": "cut'),
    "jsonl-empty-file": ("x.jsonl", b""),
    "jsonl-blank-lines-only": ("x.jsonl", b"\n\r\n   \n"),
    "jsonl-unknown-fields": ("x.jsonl", b'{"foo": 1, "bar": 2}\n'),
    "jsonl-annotator-huge-int": (
        "x.jsonl",
        lines('{"prompt": "q", "chosen": "a", "rejected": "b", "annotator": ' + "7" * 5000 + "}"),
    ),
    "jsonl-annotator-dict": ("x.jsonl", lines(trl(1, annotator={"id": 1}), trl(2, annotator=True))),
    "jsonl-duplicate-rows": ("x.jsonl", lines(trl(1), trl(1), trl(1))),
    "jsonl-keys-not-strings-shape": (
        "x.jsonl",
        lines('{"1": 2, "prompt": "q", "chosen": "a", "rejected": "b"}'),
    ),
    # formats with wrong shapes inside a record
    "labelstudio-result-number": ("x.jsonl", lines(ls_task(), ls_task(result=5))),
    "labelstudio-annotations-dict": (
        "x.jsonl",
        lines(
            ls_task(),
            {"data": {"prompt": "q", "answer1": "a", "answer2": "b"}, "annotations": {"x": 1}},
        ),
    ),
    "labelstudio-completed-by-list": (
        "x.jsonl",
        lines(
            ls_task(),
            ls_task(
                completed_by=[1, 2], result=[{"type": "pairwise", "value": {"selected": "right"}}]
            ),
        ),
    ),
    "labelstudio-selected-list": (
        "x.jsonl",
        lines(ls_task(), ls_task(result=[{"type": "pairwise", "value": {"selected": ["left"]}}])),
    ),
    "labelstudio-data-number": ("x.jsonl", lines(ls_task(), {"data": 7, "annotations": []})),
    "labelstudio-value-string": (
        "x.jsonl",
        lines(ls_task(), ls_task(result=[{"type": "pairwise", "value": "left"}])),
    ),
    "summarize-choice-float": ("x.jsonl", lines(summarize(), summarize(choice=1.0))),
    "summarize-choice-string": ("x.jsonl", lines(summarize(), summarize(choice="1"))),
    "summarize-three-summaries": (
        "x.jsonl",
        lines(summarize(), summarize(summaries=[{"text": "a"}] * 3)),
    ),
    "summarize-info-list": ("x.jsonl", lines(summarize(), summarize(info=["post"]))),
    "summarize-confidence-inf": (
        "x.jsonl",
        lines(summarize(), summarize(extra={"confidence": "inf"})),
    ),
    "shp-label-two": ("x.jsonl", lines(SHP, {**SHP, "labels": 2})),
    "shp-scores-huge": ("x.jsonl", lines({**SHP, "score_A": 1e300, "score_B": -1e300})),
    "alpacafarm-preference-fraction": ("x.jsonl", lines(ALPACA, {**ALPACA, "preference": 1.25})),
    "alpacafarm-input-dict": ("x.jsonl", lines(ALPACA, {**ALPACA, "input": {"x": 1}})),
    "hh-no-assistant": (
        "x.jsonl",
        lines(
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
            {"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        ),
    ),
    "ratings-1e308": (
        "x.jsonl",
        lines(
            {"prompt": "q", "response": "a", "rating": 3},
            {"prompt": "q", "response": "b", "rating": 1e308},
        ),
    ),
    "ratings-inf-string": (
        "x.jsonl",
        lines(
            {"prompt": "q", "response": "a", "rating": 3},
            {"prompt": "q", "response": "b", "rating": "inf"},
        ),
    ),
    "ratings-negative": (
        "x.jsonl",
        lines(
            {"prompt": "q", "response": "a", "rating": 3},
            {"prompt": "q", "response": "b", "rating": -5},
        ),
    ),
    "ratings-bool": (
        "x.jsonl",
        lines(
            {"prompt": "q", "response": "a", "rating": 3},
            {"prompt": "q", "response": "b", "rating": True},
        ),
    ),
    "ratings-huge-int": (
        "x.jsonl",
        lines(
            '{"prompt": "q", "response": "a", "rating": 4}',
            '{"prompt": "q", "response": "b", "rating": ' + "1" * 4000 + "}",
        ),
    ),
    # JSON documents
    "json-mixed-elements": ("x.json", dumps([trl(1), "text", 3, None, [trl(2)]])),
    "json-top-level-number": ("x.json", b"42"),
    "json-nested-100000": ("x.json", nested(100_000).encode()),
    "json-truncated": ("x.json", dumps([trl(1), trl(2)])[:-5]),
    "json-over-document-bound": ("x.json", dumps([trl(i, chosen="z" * 1000) for i in range(2000)])),
    "json-huge-int": (
        "x.json",
        b'[{"prompt": "q", "chosen": "a", "rejected": "b", "margin": ' + b"5" * 5000 + b"}]",
    ),
    "json-bad-utf8": ("x.json", b'[{"prompt": "\xff"}]'),
    "json-lines-named-json": ("x.json", lines(trl(1), "[1]")),
    # gzip
    "gzip-bomb-one-line": ("x.jsonl.gz", gzip.compress(b"0" * (32 << 20))),
    "gzip-bomb-blank-lines": ("x.jsonl.gz", gzip.compress(b"\n" * (32 << 20))),
    "gzip-bomb-json-document": ("x.json.gz", gzip.compress(b"[" + b" " * (8 << 20) + b"]")),
    "gzip-truncated": ("x.jsonl.gz", gzip.compress(lines(trl(1)))[:-12]),
    "gzip-not-gzip": ("x.jsonl.gz", lines(trl(1))),
    "gzip-valid": ("x.jsonl.gz", gzip.compress(lines(trl(1), "{bad"))),
    # CSV
    "csv-field-over-limit": (
        "x.csv",
        csv_file(b"q2," + b"y" * (100 << 10) + b",bad\r\n", b"q3,g3,b3\r\n"),
    ),
    "csv-more-fields": ("x.csv", csv_file(b"q2,a,b,extra\r\n")),
    "csv-unterminated-quote": ("x.csv", csv_file(b'q2,"never closed,b\r\nq3,a,b\r\n')),
    "csv-bad-bytes": ("x.csv", csv_file(b"q\xff,a,b\r\n")),
    "csv-header-only": ("x.csv", b"prompt,chosen,rejected\r\n"),
    "csv-nul-byte": ("x.csv", csv_file(b"q\x00,a,b\r\n")),
    "csv-ratings-text": (
        "x.csv",
        csv_file(b"q,b,x\r\n", header=b"prompt,response,rating").replace(b"q,good,bad", b"q,a,3"),
    ),
    "csv-fewer-fields": ("x.csv", csv_file(b"q2\r\n")),
    # Parquet
    "parquet-year-10000": (
        "x.parquet",
        parquet(
            pa.table(
                {
                    "prompt": ["q", "r"],
                    "chosen": ["a", "a"],
                    "rejected": ["b", "b"],
                    "at": pa.array([0, 253_402_300_800_000_000], pa.timestamp("us")),
                }
            )
        ),
    ),
    "parquet-list-where-text": (
        "x.parquet",
        parquet(pa.table({"prompt": [["q"], ["r"]], "chosen": ["a", "c"], "rejected": ["b", "d"]})),
    ),
    "parquet-corrupt": ("x.parquet", b"PAR1" + b"\x00" * 100 + b"PAR1"),
    "parquet-no-rows": ("x.parquet", parquet(pa.table({"prompt": pa.array([], pa.string())}))),
    "parquet-null-fields": (
        "x.parquet",
        parquet(pa.table({"prompt": ["q", None], "chosen": ["a", "b"], "rejected": ["b", None]})),
    ),
    # file types
    "unknown-suffix": ("x.txt", b"hello"),
}


def write_case(folder: Path, name: str, content) -> Path:
    path = folder / name
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A dataset with one batch already in it."""
    root = tmp_path_factory.mktemp("seed")
    first = root / "first.jsonl"
    first.write_bytes(b"".join(dumps(trl(i)) + b"\n" for i in range(5)))
    add_batch([first], "auto", root / "fb", LIMITS, Splits(0.3))
    return root / "fb"


def test_the_corpus_covers_every_file_type_with_at_least_60_inputs():
    kinds = {name.removesuffix(".gz").rsplit(".", 1)[1] for name, _ in CASES.values()}
    assert len(CASES) >= 60 and {"jsonl", "json", "csv", "parquet"} <= kinds


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_adversarial_input_is_a_clean_error_or_fully_accounted(case, seeded, tmp_path):
    name, content = CASES[case]
    dataset = tmp_path / "fb"
    shutil.copytree(seeded, dataset)
    before = snapshot(dataset)
    source = write_case(tmp_path, name, content)
    try:
        summary = add_batch([source], "auto", dataset, LIMITS, Splits(0.3))
    except UserError as e:
        assert "\n" not in str(e) and str(e).startswith(str(source))
        assert snapshot(dataset) == before
        return
    assert summary["total"] == summary["imported"] + summary["quarantined"]
    assert sum(summary["reasons"].values()) == summary["quarantined"]
    batch = dataset / "batches" / summary["batch"]
    kept = [json.loads(line) for line in (batch / QUARANTINE).read_text().splitlines()]
    assert len(kept) == summary["quarantined"] and all(q["reason"] for q in kept)
    # a quarantined record keeps at most a truncated copy of itself
    assert all(len(json.dumps(q)) < BOUNDS.max_record_bytes for q in kept)


def test_bombs_are_stopped_within_bounded_memory(tmp_path):
    limits = Limits(max_file_bytes=8 << 20, max_document_bytes=4 << 20)
    for name, data in [
        ("line.jsonl.gz", b"1" * (64 << 20)),  # one 64 MB line
        ("doc.json.gz", b"[" + b" " * (64 << 20) + b"]"),
        ("field.csv.gz", b"a,b\n" + b"1" * (64 << 20)),
    ]:
        source = tmp_path / name
        source.write_bytes(gzip.compress(data, compresslevel=1))
        tracemalloc.start()
        with pytest.raises(UserError, match="bytes"):
            add_batch([source], "trl", tmp_path / "fb", limits, Splits(0.3))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 48 << 20, (name, peak)


def test_an_oversized_line_is_quarantined_as_a_truncated_copy_with_default_bounds(tmp_path):
    source = tmp_path / "big.jsonl"
    source.write_bytes(lines(trl(1, chosen="y" * (20 << 20))))
    summary = add_batch(
        [source], "auto", tmp_path / "fb", Limits(max_quarantine_fraction=1), Splits(0.3)
    )
    assert summary["quarantined"] == 1 and "max_record_bytes" in next(iter(summary["reasons"]))
    assert (tmp_path / "fb" / QUARANTINE).stat().st_size < 64 << 10


# ------------------------------------------------------------------ converter properties
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = {
    "hh": ["chosen", "rejected", "annotator"],
    "trl": ["prompt", "chosen", "rejected", "annotator", "margin"],
    "summarize": ["info", "summaries", "choice", "worker", "extra"],
    "shp": ["history", "human_ref_A", "human_ref_B", "labels", "score_A", "score_B"],
    "alpacafarm": ["instruction", "input", "output_1", "output_2", "preference"],
    "labelstudio": ["data", "annotations", "completions"],
}


def rows_for(keys: list[str]):
    return st.dictionaries(st.sampled_from(keys), JSON, max_size=len(keys))


@pytest.mark.parametrize("fmt", sorted(PAIRWISE))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_converter_gives_text_votes_or_a_reason_for_any_shape(fmt, data):
    row = data.draw(rows_for(KEYS[fmt]))
    try:
        votes = votes_of(fmt, row)
    except Reject as e:
        assert str(e)
        return
    for v in votes:
        assert all(isinstance(getattr(v, k), str) for k in ("prompt", "chosen", "rejected"))


@settings(max_examples=150, deadline=None)
@given(row=rows_for(["prompt", "response", "rating", "annotator"]))
def test_a_rating_is_a_finite_number_or_a_reason(row):
    try:
        r = rating(row)
    except Reject:
        return
    assert r.value == r.value and abs(r.value) != float("inf")


def test_every_format_name_has_properties():
    assert set(KEYS) | {"ratings"} == set(NAMES)
