"""The commands as a user runs them (`rag` in a child process): `ask` one-shot, interactive (in a pty: Ctrl-C
and Ctrl-D) and as JSON, `search` by source, and errors in one line: bad questions, a missing index, an index
folder that holds a user's files, a busy port; nothing printed steers the terminal."""
import json
import os
import signal
import sys
import time

import pytest

from rag.offline.bench import free_port

from helpers import REPO, cli
from helpers.questions import CHINESE_QUESTION, LONG_QUESTION

ESC_TEXT = "Crew list\x1b[2J\x1b]0;pwned\x07 The captain of the Nordlys is Greta Holm. She sailed in 1987.\n"


@pytest.mark.slow
def test_nothing_printed_can_steer_the_terminal(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "log.txt").write_text(ESC_TEXT)
    (docs / "esc\x1b[31mRED\x1b[0m.txt").write_text("Red text.\n")
    (docs / "invoice\u202egpj.txt").write_text("The invoice total was 4,200 kroner.\n")
    runs = [cli("index", "--docs", docs, "--index", tmp_path / "idx", cwd=tmp_path)]
    assert runs[0].returncode == 0, runs[0].stderr
    ask = cli("ask", "--index", tmp_path / "idx", "Who is the captain of the Nordlys?", cwd=tmp_path)
    runs += [ask, cli("search", "--index", tmp_path / "idx", "invoice total", cwd=tmp_path),
             cli("show", "--index", tmp_path / "idx", "log.txt", "40", "60", cwd=tmp_path),
             cli("ask", "--index", tmp_path / "idx", "--json", "Who is the captain of the Nordlys?", cwd=tmp_path)]
    for run in runs:
        for stream in (run.stdout, run.stderr):
            raw = stream.encode("utf-8")
            assert b"\x1b" not in raw and b"\x07" not in raw and "\u202e".encode() not in raw, stream
    assert "Answer: Greta Holm" in ask.stdout, ask.stdout
    assert "\\u202e" in runs[2].stdout  # the override is shown, escaped, not obeyed
    assert "esc\\u001b[31mRED" in runs[0].stdout and "control characters" in runs[0].stdout
    assert json.loads(runs[-1].stdout)["answer"] == "Greta Holm"  # JSON keeps its meaning


@pytest.mark.slow
def test_cli_index_into_a_user_folder_is_a_one_line_error(tiny_docs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.docx").write_text("x")
    out = cli("index", "--docs", tiny_docs, "--index", victim)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "refusing to replace it" in out.stderr
    assert (victim / "thesis.docx").read_text() == "x"
    out = cli("index", "--docs", tiny_docs, "--index", ".", cwd=tmp_path)  # the working folder holds the corpus
    assert out.returncode == 1 and "Traceback" not in out.stderr and "overlaps the corpus" in out.stderr
    assert (tiny_docs / "lighthouse.txt").is_file() and (victim / "thesis.docx").is_file()


@pytest.mark.slow
def test_cli_long_question_one_shot_and_interactive():
    out = cli("ask", "--no-rebuild", LONG_QUESTION)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "tokens" in out.stderr and out.stderr.strip().count("\n") == 0
    good = "Who did Anthropic hire to lead its infrastructure effort?"
    out = cli("ask", "--no-rebuild", "--json", stdin=f"{good}\n{LONG_QUESTION}\n{CHINESE_QUESTION}\n{good}\n")
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line)["answer"] for line in out.stdout.splitlines()]
    assert answers == ["Eric Boyd", "Eric Boyd"], "the session goes on after a bad question"
    assert out.stderr.count("tokens long") == 2 and "Traceback" not in out.stderr


def test_cli_index_with_a_bad_file_name_does_not_abort(tiny_docs, tmp_path):
    with open(os.fsencode(tiny_docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x.")
    out = cli("index", "--docs", tiny_docs, "--index", tmp_path / "idx")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "not valid UTF-8" in out.stderr and "skipped 1:" in out.stdout


def test_serve_on_a_busy_or_impossible_port_is_a_one_line_error_before_loading():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.perf_counter()
        out = cli("serve", "--no-rebuild", "--port", busy.getsockname()[1], timeout=60)
        assert out.returncode == 2 and "cannot listen" in out.stderr and "Traceback" not in out.stderr
        assert time.perf_counter() - started < 30
    out = cli("serve", "--port", "99999", timeout=60)
    assert out.returncode == 2 and "between 1 and 65535" in out.stderr and "Traceback" not in out.stderr


def test_cli_ask_json(tmp_path):
    out = cli("ask", "--json", "--no-rebuild", "Who did Anthropic hire to lead its infrastructure effort?")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"question", "answer", "score", "calibrated", "citations", "passages", "warnings"}
    assert result["calibrated"] is True and result["warnings"] == []
    assert result["answer"] == "Eric Boyd"
    c = result["citations"][0]
    assert set(c) == {"source", "start", "end", "quote", "quote_start", "page", "heading", "ocr"}
    assert c["page"] is None and c["heading"] is None and c["ocr"] is False  # a plain text file has none of them
    assert c["quote"][c["start"] - c["quote_start"] : c["end"] - c["quote_start"]] == "Eric Boyd"
    text = (REPO / "seeds" / c["source"]).read_text(encoding="utf-8")
    assert text[c["start"] : c["end"]] == "Eric Boyd"
    assert set(result["passages"][0]) == {"source", "start", "end", "score", "text"}


def test_cli_interactive_with_piped_input():
    questions = "Who did Anthropic hire to lead its infrastructure effort?\n\nWhat is the capital of France?\nexit\nignored after exit\n"
    out = cli("ask", "--no-rebuild", stdin=questions)
    assert out.returncode == 0, out.stderr
    assert "Answer: Eric Boyd" in out.stdout and "[[Eric Boyd]]" in out.stdout
    assert "No answer found in the documents" in out.stdout
    assert "ignored after exit" not in out.stdout


def test_cli_rejects_bad_questions_without_traceback():
    for args in (["ask", "   "], ["ask", "x" * 1001], ["ask", "--top-k", "0", "hello"]):
        out = cli(*args, timeout=120)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and "error" in out.stderr


def test_cli_missing_index_is_a_clear_error(tmp_path):
    out = cli("search", "--no-rebuild", "--index", tmp_path / "none", "hello", timeout=120)
    assert out.returncode == 1
    assert "no index at" in out.stderr and "Traceback" not in out.stderr


def test_the_cli_filters_by_source():
    out = cli("search", "--source", "004_*", "--json", "Who did Anthropic hire to lead its infrastructure effort?")
    assert out.returncode == 0, out.stderr
    assert {p["source"] for p in json.loads(out.stdout)["passages"]} == {"004_81a3bf9f650335dc.txt"}


def _read_until(fd: int, marker: bytes, seconds: float) -> bytes:
    import select

    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _wait_exit(pid: int, fd: int, seconds: float):
    """The child's exit status, reading its output meanwhile (a full pty would block it); None if it is
    still running after `seconds` (never a wait without end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        _read_until(fd, b"\x00", 0.2)
    return None


@pytest.mark.slow
def test_ctrl_c_in_the_interactive_prompt_cancels_the_line_and_ctrl_d_leaves():
    """In a real terminal (a pty): Ctrl-C at the prompt drops the line and asks again, a question is still
    answered after it, and Ctrl-D ends the session with status 0."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: `rag ask` on the committed index, in the terminal
        os.chdir(REPO)
        # As a terminal's foreground program gets it: a suite started in the background (`cmd &`) runs with SIGINT
        # ignored, which exec keeps and Python then leaves alone, so Ctrl-C would do nothing at all.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-m", "rag.cli", "ask", "--no-rebuild"])
    try:
        # Each key goes once readline holds the terminal: a Ctrl-D typed while the terminal is still in cooked
        # mode (the prompt printed, input() not yet called) reaches readline as a NUL, not as end of input.
        assert b"question> " in _read_until(fd, b"question> ", 120)
        time.sleep(1.0)
        os.write(fd, b"half a question\x03")
        after = _read_until(fd, b"question> ", 30)
        assert b"rag: cancelled" in after and b"question> " in after and b"interrupted" not in after, after
        time.sleep(1.0)
        os.write(fd, b"Who did Anthropic hire to lead its infrastructure effort?\r")
        answered = _read_until(fd, b"question> ", 120)
        assert b"Eric Boyd" in answered, answered
        time.sleep(1.0)
        os.write(fd, b"\x04")
        status = _wait_exit(pid, fd, 30)
        assert status is not None, "Ctrl-D did not end the session"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_a_non_loopback_bind_without_keys_is_refused_before_loading(tmp_path):
    started = time.monotonic()
    out = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data", tmp_path / "empty")
    assert out.returncode == 2 and "without API keys" in out.stderr and "--insecure-no-auth" in out.stderr
    assert time.monotonic() - started < 20 and "Traceback" not in out.stderr
