"""Retail purchases (document 000, section 3): one product bought per message, drawn at random.

The document simulates an online shop with ``random.choice`` over a fixed list of products — 3
("Gráfico de 3 Colunas": Freezer, Ar Condicionado, Microondas) or 20 — sending 500 messages, one
every 0.5 s: 78.5 million online purchases in Brazil in 2021 are ≈ 2.49 per second, rounded to one
every half second. The product lists below are the document's, spelled as its result tables spell
them (Tabela 3 for three products, Tabela 4 for twenty, in that table's order); a consumer's final
counts can be compared with those tables name for name.

Generation is separate from sending: :func:`retail_messages` is a pure, seeded iterator of message
dicts (``random.Random(seed)``, so two runs with one seed send the same purchases), and
:func:`riera.apps.producers.produce` paces and sends them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from riera.apps.producers import message
from riera.errors import PlanError

# Document 000, Tabela 3 ("Contagem Freezer / Ar Condicionado / Microondas").
PRODUCTS_3: tuple[str, ...] = ("Freezer", "Ar Condicionado", "Microondas")

# Document 000, Tabela 4 ("Contagem Total de Amostras com 500 Exemplos"), in the table's order.
PRODUCTS_20: tuple[str, ...] = (
    "Ar Condicionado",
    "Aspirador",
    "Carregador de Celular",
    "Carregador de Computador",
    "Celular",
    "Chuveiro Elétrico",
    "Computador",
    "Filtro de Linha",
    "Fogão",
    "Fone de Ouvido",
    "Freezer",
    "Liquidificador",
    "Lustre",
    "Microondas",
    "Mouse de Computador",
    "Purificador de Água",
    "Relógio",
    "Roteador",
    "Teclado de Computador",
    "Ventilador",
)

CATALOGUES: dict[int, tuple[str, ...]] = {3: PRODUCTS_3, 20: PRODUCTS_20}
COUNT = 500  # the document's sample size
INTERVAL = 0.5  # seconds between purchases (≈ 2.49 purchases/s)


def catalogue(n: int) -> tuple[str, ...]:
    """The document's 3- or 20-product list.

    >>> catalogue(3)
    ('Freezer', 'Ar Condicionado', 'Microondas')
    """
    try:
        return CATALOGUES[n]
    except KeyError:
        raise PlanError(
            f"the document's retail producer has 3 or 20 products; got {n!r} (use --products 3 "
            f"or --products 20)"
        ) from None


def retail_messages(
    products: int = 3, count: int = COUNT, seed: int | None = None
) -> Iterator[dict[str, str]]:
    """``count`` purchases ``{"chave": "<n>", "valorA": "<product>", "valorB": "1"}``, ``n`` from
    1, each product drawn with ``random.choice`` from the 3- or 20-product list. Arguments are
    checked here, when called, not at the first message.

    >>> [m["valorA"] for m in retail_messages(3, count=4, seed=42)]
    ['Microondas', 'Freezer', 'Freezer', 'Microondas']
    >>> next(retail_messages(20, seed=1))
    {'chave': '1', 'valorA': 'Celular', 'valorB': '1'}
    """
    names = catalogue(products)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise PlanError(f"retail_messages: count must be an integer ≥ 0; got {count!r}")
    return _draw(names, count, random.Random(seed))


def _draw(names: tuple[str, ...], count: int, rng: random.Random) -> Iterator[dict[str, str]]:
    for n in range(1, count + 1):
        yield message(n, rng.choice(names))
