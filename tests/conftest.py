"""Fixtures shared by several test files. Plain helper functions and classes are in ``helpers.py``.

Scopes: a fixture whose object no test changes is built once per session (the digits dataset, the trained
standard CNN's weights); a model is handed to each module as its own copy, so a module that moves it to train
mode or wraps it cannot change another module's numbers.
"""
from __future__ import annotations

import copy
import socket

import pytest
import torch

from cas_edu import data


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    """scikit-learn's 8×8 digits with the default split (offline; no test changes it)."""
    return data.load("digits")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to open a network connection (use with ``pytest.mark.usefixtures``)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def _standard_cnn_weights(digits):
    from cas_edu.presets import make_config
    from cas_edu.training import train

    model, _ = train(make_config("digits", method="standard", epochs=5, device="cpu"), progress=False, dataset=digits)
    return model.eval()


@pytest.fixture(scope="module")
def standard_cnn(_standard_cnn_weights):
    """A small CNN trained normally on all digits training images (5 epochs, a few seconds, once per session),
    in eval mode; each module gets its own copy."""
    return copy.deepcopy(_standard_cnn_weights)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny CPU work (more threads only add synchronisation on a shared
    machine); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
