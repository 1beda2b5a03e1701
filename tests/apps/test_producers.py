"""Document 000's producers: the generators (format, product lists, prompt, words), the pacing of
:func:`riera.apps.producers.produce` against the real embedded broker, and ``riera stream produce``
run as a subprocess against ``memory://`` and a real Redis."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riera.apps.producers import Produced, encode, message, produce
from riera.apps.producers.comments import (
    FEW_SHOT,
    MAX_TOKENS,
    PROMPT,
    REPEAT_PENALTY,
    STOP,
    comment_messages,
    comment_texts,
    comment_words,
    synthetic_comments,
    words_of,
)
from riera.apps.producers.retail import PRODUCTS_3, PRODUCTS_20, retail_messages
from riera.errors import MissingExtraError, PlanError
from riera.stream.connectors.base import Message, open_source
from services import service_missing

# Copied from document 000 (Tabela 3 and Tabela 4), independently of the module under test.
DOC_PRODUCTS_3 = ["Freezer", "Ar Condicionado", "Microondas"]
DOC_PRODUCTS_20 = [
    "Ar Condicionado", "Aspirador", "Carregador de Celular", "Carregador de Computador",
    "Celular", "Chuveiro Elétrico", "Computador", "Filtro de Linha", "Fogão", "Fone de Ouvido",
    "Freezer", "Liquidificador", "Lustre", "Microondas", "Mouse de Computador",
    "Purificador de Água", "Relógio", "Roteador", "Teclado de Computador", "Ventilador",
]  # fmt: skip
LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def broker_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A broker directory of the test's own, for this process and the CLI it starts."""
    folder = tmp_path / "brokers"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(folder))
    return folder


@pytest.fixture
def memory_url(broker_dir: Path) -> str:
    return f"memory://producers-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A fresh stream on the Redis at 127.0.0.1:6379 (database 15), deleted afterwards."""
    if importlib.util.find_spec("redis") is None:
        service_missing("the redis client library is not installed: pip install 'riera[test]'")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=15, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        service_missing(f"no Redis answers on 127.0.0.1:6379: {e}")
    name = f"riera-test-producers-{uuid.uuid4().hex}"
    try:
        yield f"redis://127.0.0.1:6379/15/{name}"
    finally:
        client.delete(name, f"{name}:meta")
        client.close()


def read_back(url: str, expected: int, timeout_s: float = 20.0) -> list[Message]:
    """Every message of the source's one partition, polling until ``expected`` arrived."""
    source = open_source(url)
    try:
        assert source.partitions() == 1
        reader = source.reader({0: None})
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            got += reader.poll(10_000, 0.2)
        got += reader.poll(10_000, 0.05)  # nothing more than expected
        reader.close()
        return got
    finally:
        source.close()


def values(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.value.decode("utf-8")) for m in messages]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riera", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


# -- retail purchases --------------------------------------------------------------------------


def test_messages_have_the_documents_format() -> None:
    msgs = list(retail_messages(3, count=5, seed=0))
    assert [list(m) for m in msgs] == [["chave", "valorA", "valorB"]] * 5
    assert [m["chave"] for m in msgs] == ["1", "2", "3", "4", "5"]
    assert {m["valorB"] for m in msgs} == {"1"}
    key, value, ts = encode(message(12, "Fogão"), 1700000000123.5)
    assert key == b"Chave 12"
    assert ts == 1700000000123.5
    assert value.decode("utf-8") == (
        '{"chave": "12", "valorA": "Fogão", "valorB": "1", "ts": 1700000000123.5}'
    )


def test_product_lists_are_the_documents() -> None:
    assert list(PRODUCTS_3) == DOC_PRODUCTS_3
    assert list(PRODUCTS_20) == DOC_PRODUCTS_20
    three = [m["valorA"] for m in retail_messages(3, count=300, seed=1)]
    twenty = [m["valorA"] for m in retail_messages(20, count=2000, seed=1)]
    assert set(three) == set(DOC_PRODUCTS_3)
    assert set(twenty) == set(DOC_PRODUCTS_20)  # every product drawn, and nothing else


def test_retail_is_deterministic_for_a_seed() -> None:
    assert list(retail_messages(20, 100, seed=7)) == list(retail_messages(20, 100, seed=7))
    assert list(retail_messages(20, 100, seed=7)) != list(retail_messages(20, 100, seed=8))
    assert len(list(retail_messages())) == 500  # the document's sample size


def test_retail_refuses_other_catalogues_when_called() -> None:
    with pytest.raises(PlanError, match=r"3 or 20 products; got 7"):
        retail_messages(7)  # at the call, not at the first message
    with pytest.raises(PlanError, match="count"):
        retail_messages(3, count=-1)


# -- product comments --------------------------------------------------------------------------


def test_prompt_and_settings_are_figure_6() -> None:
    assert PROMPT.startswith(
        "Crie um comentario bastante curto positivo ou negativo sobre um produto que voce comprou "
        "recentemente. Use os exemplos para melhorar os resultados.\n    Comentário: Eu odeio meu "
        "liquidificador.\n"
    )
    assert PROMPT.endswith(
        "\n    Comentário: Achei que esse lustre seria melhor. Não gostei.\n    Comentário: "
    )
    assert PROMPT.count("Comentário: ") == len(FEW_SHOT) + 1 == 15
    assert (MAX_TOKENS, list(STOP), REPEAT_PENALTY) == (30, ["Comentário:"], 1.15)


def test_words_are_lower_cased_without_punctuation_and_stop_words_stay() -> None:
    assert words_of("O fogão que comprei já está com defeito. Não recomendo não.") == [
        "o", "fogão", "que", "comprei", "já", "está", "com", "defeito", "não", "recomendo", "não",
    ]  # fmt: skip
    assert words_of("“Ótimo”, ar-condicionado!! 100% (recomendo)… ¿sim?") == [
        "ótimo", "arcondicionado", "100", "recomendo", "sim",
    ]  # fmt: skip
    assert words_of("  \n ") == []


def test_built_in_comments_recombine_the_documents_examples() -> None:
    words = list(comment_words(50, seed=3))
    assert words == list(comment_words(50, seed=3))
    assert words != list(comment_words(50, seed=4))
    assert all(re.fullmatch(r"[^\W_]+", w) and w == w.lower() for w in words)
    vocabulary = {w for text in (*FEW_SHOT, *DOC_PRODUCTS_20) for w in words_of(text)}
    assert set(words) <= vocabulary
    assert 250 <= len(words) <= 600  # the document's 50 Llama-2-7B comments made 395 words
    # a comment is one opening naming a product, then at most one follow-up sentence
    for text in synthetic_comments(200, seed=5):
        assert 1 <= len(re.findall(r"[.!?]", text)) <= 2
        assert any(p.lower() in text.lower() for p in DOC_PRODUCTS_20), text


def test_comment_messages_carry_one_word_each() -> None:
    msgs = list(comment_messages(5, seed=2))
    assert [m["valorA"] for m in msgs] == list(comment_words(5, seed=2))
    assert [m["chave"] for m in msgs] == [str(n) for n in range(1, len(msgs) + 1)]
    assert {m["valorB"] for m in msgs} == {"1"}


@pytest.mark.skipif(LLAMA_CPP, reason="llama-cpp-python is installed")
def test_a_model_without_llama_cpp_names_the_extra(tmp_path: Path) -> None:
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'riera[llm]'")):
        comment_texts(1, model=tmp_path / "zephyr-7b-beta.Q4_K_M.gguf")


# -- pacing and sending --------------------------------------------------------------------------


def test_produce_paces_on_a_monotonic_schedule(memory_url: str) -> None:
    t0 = time.monotonic()
    done = produce(memory_url, retail_messages(3, 20, seed=0), interval=0.01)
    elapsed = time.monotonic() - t0
    assert done.sent == 20
    assert elapsed >= 0.19 and done.seconds >= 0.19  # message 19 is due 0.19 s after message 0
    got = read_back(memory_url, 20)
    stamps = [v["ts"] for v in values(got)]
    assert [m.ts_ms for m in got] == stamps  # the JSON's ts is the broker's producer timestamp
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # on schedule: message i leaves no earlier than i intervals after message 0
    assert all(ts - stamps[0] >= i * 10 - 1 for i, ts in enumerate(stamps))
    assert [m.key for m in got] == [f"Chave {n}".encode() for n in range(1, 21)]


def test_interval_zero_sends_in_batches_of_at_most_1000(memory_url: str) -> None:
    batches: list[int] = []

    def progress(sent: int, seconds: float) -> None:
        batches.append(sent - sum(batches))

    done = produce(memory_url, retail_messages(20, 2500, seed=0), interval=0, progress=progress)
    assert done == Produced(2500, done.seconds) and done.rate > 0
    assert sum(batches) == 2500 and max(batches) <= 1000
    got = values(read_back(memory_url, 2500))
    assert [v["chave"] for v in got] == [str(n) for n in range(1, 2501)]


def test_a_slow_generator_does_not_hold_back_what_it_made(memory_url: str) -> None:
    """Like the LLM: three words, then a long pause. The words must reach the broker during the
    pause (the generator itself watches for them), not after the thousandth word."""
    seen = threading.Event()

    def words() -> Iterator[dict[str, str]]:
        yield from (message(n, w) for n, w in enumerate(["eu", "amo", "meu"], start=1))
        source = open_source(memory_url)
        try:
            reader = source.reader({0: None})
            got: list[Message] = []
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                got += reader.poll(10, 0.1)
            if len(got) == 3:
                seen.set()
        finally:
            source.close()
        yield message(4, "microondas")

    assert produce(memory_url, words(), interval=0).sent == 4
    assert seen.is_set(), "the first words waited for the generator's next one"


def test_a_generator_error_is_raised_after_what_came_before(memory_url: str) -> None:
    def broken() -> Iterator[dict[str, str]]:
        yield from retail_messages(3, 5, seed=0)
        raise RuntimeError("the model crashed")

    with pytest.raises(RuntimeError, match="the model crashed"):
        produce(memory_url, broken(), interval=0)
    assert len(read_back(memory_url, 5)) == 5


def test_produce_checks_its_arguments(memory_url: str) -> None:
    for interval in (-1, float("nan"), float("inf")):
        with pytest.raises(PlanError, match="interval"):
            produce(memory_url, [], interval=interval)
    with pytest.raises(PlanError, match="no scheme"):
        produce("mensagens-produtor", [], interval=0)


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_produces_retail_to_memory(memory_url: str, broker_dir: Path) -> None:
    proc = run_cli("stream", "produce", "retail", "--to", memory_url, "--count", "50",
                   "--interval", "0", "--seed", "5", env={"RIERA_BROKER_DIR": str(broker_dir)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert re.search(rf"sent 50 messages to {memory_url} in [\d.]+ s \([\d,.]+ messages/s\)",
                     proc.stderr)  # fmt: skip
    got = read_back(memory_url, 50)
    assert [m.key for m in got] == [f"Chave {n}".encode() for n in range(1, 51)]
    records = values(got)
    expected = list(retail_messages(3, 50, seed=5))
    assert [{k: v for k, v in r.items() if k != "ts"} for r in records] == expected
    assert all(isinstance(r["ts"], float) for r in records)


@pytest.mark.integration
def test_cli_produces_retail_to_redis(redis_url: str) -> None:
    proc = run_cli("stream", "produce", "retail", "--to", redis_url, "--products", "20",
                   "--count", "50", "--interval", "0", "--seed", "9")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sent 50 messages" in proc.stderr
    got = read_back(redis_url, 50)
    assert [m.key for m in got] == [f"Chave {n}".encode() for n in range(1, 51)]
    records = values(got)
    assert [r["valorA"] for r in records] == [m["valorA"] for m in retail_messages(20, 50, seed=9)]
    assert [m.ts_ms for m in got] == [r["ts"] for r in records]


@pytest.mark.integration
def test_cli_produces_comment_words(memory_url: str, broker_dir: Path) -> None:
    proc = run_cli("stream", "produce", "comments", "--to", memory_url, "--count", "5",
                   "--seed", "11", env={"RIERA_BROKER_DIR": str(broker_dir)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = list(comment_words(5, seed=11))
    got = values(read_back(memory_url, len(expected)))
    assert [r["valorA"] for r in got] == expected


def _default_sigint() -> None:
    # A shell runs background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.integration
def test_cli_ctrl_c_reports_what_was_sent(memory_url: str, broker_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riera", "stream", "produce", "retail", "--to", memory_url,
         "--count", "1000", "--interval", "0.05"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RIERA_BROKER_DIR": str(broker_dir)},
        preexec_fn=_default_sigint,
    )  # fmt: skip
    with proc:  # the pipe is closed however the test ends
        try:
            read_back(memory_url, 3)  # polls until the producer is sending
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    said = re.search(rf"interrupted: sent (\d+) messages to {memory_url}", stderr)
    assert said is not None, stderr
    assert 3 <= int(said.group(1)) < 1000
    assert len(read_back(memory_url, int(said.group(1)), timeout_s=1)) == int(said.group(1))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mensagens-produtor", "has no scheme"),
        ("bogus://somewhere/topic", "no stream producer for bogus://"),
        ("redis://127.0.0.1:6379/notadb", "expected redis://HOST:PORT/DB/STREAM"),
    ],
)
def test_cli_bad_url_exits_2(url: str, says: str) -> None:
    proc = run_cli("stream", "produce", "retail", "--to", url, "--count", "3")
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and says in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_cli_bad_product_count_exits_2(memory_url: str, broker_dir: Path) -> None:
    proc = run_cli("stream", "produce", "retail", "--to", memory_url, "--products", "7",
                   env={"RIERA_BROKER_DIR": str(broker_dir)})  # fmt: skip
    assert proc.returncode == 2
    assert "3 or 20 products; got 7" in proc.stderr


@pytest.mark.integration
@pytest.mark.skipif(LLAMA_CPP, reason="llama-cpp-python is installed")
def test_cli_model_without_llama_cpp_exits_2_naming_the_extra(
    memory_url: str, broker_dir: Path, tmp_path: Path
) -> None:
    proc = run_cli("stream", "produce", "comments", "--to", memory_url, "--model",
                   str(tmp_path / "llama-2-7b-chat.Q4_K_M.gguf"),
                   env={"RIERA_BROKER_DIR": str(broker_dir)})  # fmt: skip
    assert proc.returncode == 2
    assert "pip install 'riera[llm]'" in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr
