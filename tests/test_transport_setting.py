"""The trio transport's setting and version pin, in this process.

``TRIO_COUNTERS_TRANSPORT`` selects the fast or the stock transport, and refuses
anything else; on another hypercorn version, or with an internal the fast transport
relies on missing, hypercorn's own transport serves, unguarded, with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import hypercorn.trio.run as run_module
import pytest
from hypercorn.trio.tcp_server import TCPServer as StockTCPServer

from trio_counters import transport
from trio_counters.config import ConfigError
from trio_counters.transport import FastTCPServer, GuardedTCPServer, TransportFallbackWarning


@pytest.fixture
def fresh_install_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "TCPServer", run_module.TCPServer)
    monkeypatch.setattr(run_module, "worker_serve", run_module.worker_serve)
    monkeypatch.setattr(transport, "_warned", False)


def fallback_warnings(*calls: Callable[[], Any]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in calls:
            assert call() is False
    return [w for w in caught if issubclass(w.category, TransportFallbackWarning)]


def test_another_hypercorn_version_falls_back_with_one_warning(
    fresh_install_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "_hypercorn_version", lambda: "0.18.1")
    caught = fallback_warnings(
        lambda: transport.install(True),
        lambda: transport.install(True),
        lambda: transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fast"}),
    )
    assert len(caught) == 1
    assert "0.18.1" in str(caught[0].message) and "0.18.0" in str(caught[0].message)
    assert run_module.TCPServer is StockTCPServer
    assert transport.active() == "stock"


def test_a_missing_internal_falls_back_with_one_warning(
    fresh_install_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(StockTCPServer, "_initiate_server_close")
    caught = fallback_warnings(lambda: transport.install(True), lambda: transport.install(True))
    assert len(caught) == 1
    assert "_initiate_server_close" in str(caught[0].message)
    assert run_module.TCPServer is StockTCPServer


def test_the_setting_selects_the_transport(fresh_install_state: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on the checked hypercorn: no warning at all
        assert transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fast"}) is True
        assert run_module.TCPServer is FastTCPServer and transport.active() == "fast"
        assert transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": " Stock "}) is False
        # stock: hypercorn's own connection handling, guarded so no connection ends the worker
        assert run_module.TCPServer is GuardedTCPServer and transport.active() == "stock"
        transport.install_from_environ({})
        assert transport.active() == transport.DEFAULT_TRANSPORT
    with pytest.raises(ConfigError, match="TRIO_COUNTERS_TRANSPORT"):
        transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fastest"})
