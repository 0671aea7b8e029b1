"""Root pytest configuration: names available to every doctest."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["nn"] = torch.nn
