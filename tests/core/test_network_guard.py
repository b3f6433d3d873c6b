import socket

import pytest


def test_tests_cannot_reach_outside_loopback() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ConnectionRefusedError, match="loopback only"):
            s.connect(("192.0.2.1", 80))
    finally:
        s.close()
