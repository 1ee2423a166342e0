"""Paths that are not plain files where data is read: a FIFO, a device, a socket, a folder or a
link leaving the project in a data folder, or named to `rlhf feedback import`. Each is one line
naming the path, in bounded time (a FIFO would block a reader, /dev/zero never ends), and
changes nothing. And a stdout that nobody reads ends a command quietly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.flows.cli import main
from tests.support.faults import assert_one_line_error, tree


def rlhf(project: Path, capsys, *argv: str) -> tuple[int, str]:
    rc = main(["--params", str(project / "params.yaml"), *argv])
    return rc, capsys.readouterr().err


def make_fifo(path: Path) -> str:
    os.mkfifo(path)
    return "a FIFO"


def link_to_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return "a character device"


def make_socket(path: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))  # the file stays after the socket closes
    sock.close()
    return "a socket"


def make_folder(path: Path) -> str:
    path.mkdir()
    return "a folder"


SPECIAL = {"fifo": make_fifo, "zero": link_to_zero, "socket": make_socket, "folder": make_folder}


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_special_file_in_a_data_folder_is_one_line_and_changes_nothing(
    tiny_project, capsys, kind
):
    what = SPECIAL[kind](tiny_project / "data/corpus/more.txt")
    before = tree(tiny_project / "artifacts") if (tiny_project / "artifacts").exists() else {}

    rc, err = rlhf(tiny_project, capsys, "stage", "ingest")

    line = assert_one_line_error(rc, err, "data/corpus/more.txt")
    assert what in line
    assert not (tiny_project / "artifacts/ingest").exists()
    assert (tree(tiny_project / "artifacts") if before else {}) == before


def test_a_link_leaving_the_project_is_refused_and_one_inside_it_is_read(
    tiny_project, tmp_path, capsys
):
    corpus = tiny_project / "data/corpus"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("a document no one tracks\n")
    (corpus / "more.txt").symlink_to(outside)

    rc, err = rlhf(tiny_project, capsys, "stage", "ingest")

    line = assert_one_line_error(rc, err, "more.txt", str(outside))
    assert "outside" in line

    (corpus / "more.txt").unlink()
    kept = tiny_project / "kept"  # inside the project, as DVC's cache is
    kept.mkdir()
    (kept / "more.txt").write_text((corpus / "reviews.txt").read_text())
    (corpus / "more.txt").symlink_to(kept / "more.txt")
    assert rlhf(tiny_project, capsys, "stage", "ingest")[0] == 0


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_feedback_import_of_a_special_file_is_one_line(tiny_project, capsys, kind):
    source = tiny_project / "votes.jsonl"
    what = SPECIAL[kind](source)

    rc, err = rlhf(tiny_project, capsys, "feedback", "import", str(source))

    line = assert_one_line_error(rc, err, str(source))
    assert what in line


def test_a_closed_stdout_ends_the_command_quietly():
    read, write = os.pipe()
    os.close(read)  # `rlhf params | head -0`: nobody reads what it prints
    out = subprocess.run(
        [sys.executable, "-m", "rlhf.flows.cli", "params", "--defaults"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write)
    assert out.returncode == 1
    assert out.stderr == ""
