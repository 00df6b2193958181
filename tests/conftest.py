"""Options for the whole suite."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz",
        action="store_true",
        help="run tests/test_translate_fuzz.py at 50 times its CI budget, randomized (a fuzzing session)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Read by tests/test_translate_fuzz.py when it is imported (its Hypothesis settings are fixed then).
    if config.getoption("--fuzz"):
        os.environ["TOKENVOY_FUZZ"] = "1"
