"""Product comments (document 000, section 3.9 and Figura 6): words from comments a local LLM writes.

The document asks a local large language model (TheBloke's Llama-2-7B-Chat, Llama-2-13B-chat and
zephyr-7B-beta, 4-bit GGUF, run with llama-cpp-python) for 50 short comments with a Portuguese
few-shot prompt (:data:`PROMPT`, copied from its Figura 6 character for character, with the
indentation the prompt had inside the document's script), ``max_tokens=30``,
``stop=["Comentário:"]``, ``repeat_penalty=1.15`` and streaming off. Each comment is split into
words with ``str.split``, punctuation removed, lower-cased — no stop-word removal, so "o", "e",
"de" are counted like any word — and each word is one message ``{"chave": "<n>", "valorA":
"<word>", "valorB": "1"}``. The document reports 395 words for its 50 Llama-2-7B comments (Tabela 5).

**Without a model** (the default: nothing is downloaded at run time), :func:`synthetic_comments`
writes comments of the same shape from the prompt's own examples: each example is cut into
sentences; a sentence naming a product becomes an opening with the product as a slot, filled with
one of the document's 20 products; the other sentences are follow-ups. A comment is one opening,
then, as often as the examples have a second sentence (8 of 14), one follow-up of the same
sentiment (positive or negative, as its example was), so a comment reads as one opinion. The
vocabulary is the examples' and the products', the length ≈ 8.5 words (the document's Llama-2-7B
wrote 7.9): word counts look like the document's, deterministically for a given seed.

**With a model** (``model="path/to/model.gguf"``), llama-cpp-python is imported when called, not
when this module is: it is an optional extra (``pip install 'riera[llm]'``), and a missing extra
raises :class:`~riera.errors.MissingExtraError` before anything is sent.
"""

from __future__ import annotations

import functools
import random
import re
import string
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from riera.apps.producers import message
from riera.apps.producers.retail import PRODUCTS_20
from riera.errors import MissingExtraError, PlanError, SourceError

COUNT = 50  # the document's generations per run
MAX_TOKENS = 30
STOP = ("Comentário:",)
REPEAT_PENALTY = 1.15

# Document 000, Figura 6 ("Prompt dos Grandes Modelos de Linguagem"), verbatim, accents as written
# there ("comentario", "voce" without them in the instruction).
INSTRUCTION = (
    "Crie um comentario bastante curto positivo ou negativo sobre um produto que voce comprou "
    "recentemente. Use os exemplos para melhorar os resultados."
)
FEW_SHOT: tuple[str, ...] = (
    "Eu odeio meu liquidificador.",
    "Eu amo meu microondas.",
    "Meu computador é incrível.",
    "Meu mouse de computador não funciona muito bom.",
    "Helócio muito bom. Bem melhor que o meu antigo.",
    "O fogão que comprei já está com defeito. Não recomendo não.",
    "Melhor ar condicionado que já comprei. Funciona perfeitamente.",
    "Meu celular não funciona direito. Me arrependo de ter comprado.",
    "Comprei esse modelo de fone de ouvido ontem. Hoje eu abri e veio com vários defeitos.",
    "Paguei muito caro desse freezer e não valeu a pena.",
    "Muito bom e barato esse purificador de água.",
    "Ventilador perfeito. Gostei bastante.",
    "Achei terrível esse roteador. Muito barulhento e difícil de configurar.",
    "Achei que esse lustre seria melhor. Não gostei.",
)
# The script's triple-quoted string: each line after the first indented by four spaces.
PROMPT = INSTRUCTION + "".join(f"\n    Comentário: {c}" for c in FEW_SHOT) + "\n    Comentário: "

# Our reading of the examples' sentiment (the prompt asks for "positivo ou negativo").
_POSITIVE = frozenset(
    {
        "Eu amo meu microondas.",
        "Meu computador é incrível.",
        "Helócio muito bom. Bem melhor que o meu antigo.",
        "Melhor ar condicionado que já comprei. Funciona perfeitamente.",
        "Muito bom e barato esse purificador de água.",
        "Ventilador perfeito. Gostei bastante.",
    }
)
# "Helócio" names a product in the examples (a misspelt "Relógio"); the others are in PRODUCTS_20.
_ALIASES = ("helócio",)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SLOT = "{}"
# What the document strips (Python's string.punctuation) and every other Unicode punctuation mark
# an LLM may write (“ ” … – ¡ ¿).
_PUNCTUATION = frozenset(string.punctuation)


def words_of(text: str) -> list[str]:
    """A comment's words as the document counts them: punctuation removed, lower-cased, split on
    whitespace; stop words kept.

    >>> words_of("Achei terrível esse roteador. Muito barulhento e difícil de configurar.")
    ['achei', 'terrível', 'esse', 'roteador', 'muito', 'barulhento', 'e', 'difícil', 'de', 'configurar']
    >>> words_of("  “Ótimo!!” — recomendo… ")
    ['ótimo', 'recomendo']
    """
    kept = "".join(
        ch for ch in text if ch not in _PUNCTUATION and not unicodedata.category(ch).startswith("P")
    )
    return kept.lower().split()


def comment_texts(
    count: int = COUNT, seed: int | None = None, model: str | Path | None = None
) -> Iterator[str]:
    """``count`` comments: from the GGUF ``model`` with the document's prompt and settings, or,
    without one, from :func:`synthetic_comments`. The model is loaded (and a missing
    llama-cpp-python reported) here, when called; comments are generated as they are consumed.
    ``seed`` seeds the generator, or the model's sampler."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise PlanError(f"comment generations must be an integer ≥ 0; got {count!r}")
    if model is None:
        return synthetic_comments(count, seed)
    return _generate(_load(Path(model), seed), count)


def comment_words(
    count_comments: int = COUNT, seed: int | None = None, model: str | Path | None = None
) -> Iterator[str]:
    """The words of ``count_comments`` comments, in order (see :func:`words_of`).

    >>> list(comment_words(1, seed=7))
    ['o', 'celular', 'que', 'comprei', 'já', 'está', 'com', 'defeito', 'não', 'recomendo', 'não']
    """
    texts = comment_texts(count_comments, seed, model)
    return (word for text in texts for word in words_of(text))


def comment_messages(
    count_comments: int = COUNT, seed: int | None = None, model: str | Path | None = None
) -> Iterator[dict[str, str]]:
    """One document message per word, ``chave`` counting words from 1.

    >>> next(comment_messages(1, seed=7))
    {'chave': '1', 'valorA': 'o', 'valorB': '1'}
    """
    words = comment_words(count_comments, seed, model)
    return (message(n, word) for n, word in enumerate(words, start=1))


# -- without a model -------------------------------------------------------------------------------


@functools.cache
def _phrasebook() -> tuple[tuple[tuple[str, bool], ...], dict[bool, tuple[str, ...]], float]:
    """From the examples: openings (with a product slot) and their sentiment, follow-ups by
    sentiment, and the share of examples with more than one sentence."""
    names = sorted({p.lower() for p in PRODUCTS_20} | set(_ALIASES), key=len, reverse=True)
    product = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    openings: list[tuple[str, bool]] = []
    follow_ups: dict[bool, list[str]] = {True: [], False: []}
    longer = 0
    for example in FEW_SHOT:
        positive = example in _POSITIVE
        sentences = _SENTENCE.split(example)
        longer += len(sentences) > 1
        for sentence in sentences:
            template = product.sub(_SLOT, sentence, count=1)
            if template != sentence:
                openings.append((template, positive))
            else:
                follow_ups[positive].append(sentence)
    frozen = {k: tuple(v) for k, v in follow_ups.items()}
    return tuple(openings), frozen, longer / len(FEW_SHOT)


def synthetic_comments(count: int = COUNT, seed: int | None = None) -> Iterator[str]:
    """``count`` short Portuguese product comments recombined from the prompt's examples with
    ``random.Random(seed)`` (see the module doc).

    >>> for comment in synthetic_comments(2, seed=1):
    ...     print(comment)
    Meu teclado de computador é incrível.
    Achei terrível esse carregador de celular. Muito barulhento e difícil de configurar.
    """
    rng = random.Random(seed)
    openings, follow_ups, p_more = _phrasebook()
    for _ in range(count):
        template, positive = rng.choice(openings)
        name = rng.choice(PRODUCTS_20).lower()
        if template.startswith(_SLOT):
            name = name[:1].upper() + name[1:]
        sentences = [template.replace(_SLOT, name)]
        if rng.random() < p_more:
            sentences.append(rng.choice(follow_ups[positive]))
        yield " ".join(sentences)


# -- with a model ----------------------------------------------------------------------------------


def _load(path: Path, seed: int | None) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise MissingExtraError(
            f"--model {path}: comments from a local LLM need llama-cpp-python, which is not "
            f"installed: pip install 'riera[llm]' (or leave out --model for the built-in generator)"
        ) from err
    if not path.is_file():
        raise SourceError(f"--model {path}: no such file; give the path of a GGUF model file")
    options: dict[str, Any] = {"model_path": str(path), "verbose": False}  # no timing chatter
    if seed is not None:
        options["seed"] = seed
    try:
        return Llama(**options)
    except (ValueError, RuntimeError, OSError) as err:
        raise SourceError(f"--model {path}: llama-cpp-python cannot load it: {err}") from err


def _generate(llm: Any, count: int) -> Iterator[str]:
    for _ in range(count):
        output = llm(
            PROMPT,
            max_tokens=MAX_TOKENS,
            stop=list(STOP),
            stream=False,
            repeat_penalty=REPEAT_PENALTY,
        )
        yield str(output["choices"][0]["text"]).strip()
