"""One quantity parser (the kubernetes client's) for the operator, the scheduler check and the
sandbox, and one formatter."""

from __future__ import annotations

from decimal import Decimal

import pytest
from llmops.api.quantity import format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("8", 8), ("500m", Decimal("0.5")), ("0.5", Decimal("0.5")), ("1Ki", 1024), ("16Gi", 16 * 2**30),
     ("1M", 10**6), ("1k", 1000), ("1.5G", 1_500_000_000), ("1e3", 1000), ("250u", Decimal("0.00025"))],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["12XB", "", "1.2.3", "Gi"])
def test_parse_quantity_rejects_what_the_api_server_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal(32), "32"), (Decimal(256 * 2**30), "256Gi"), (Decimal("1.5"), "1500m"), (Decimal(2**20 * 3), "3Mi"),
     (Decimal("1E+3"), "1000"), (Decimal("0.0005"), "1m"), (7, "7")],
)
def test_format_quantity(value: Decimal | int, text: str) -> None:
    assert format_quantity(value) == text


def test_a_formatted_quantity_parses_back_no_smaller() -> None:
    for text in ("500m", "16Gi", "3", "1.5", "2.0001"):
        assert parse_quantity(format_quantity(parse_quantity(text))) >= parse_quantity(text)
