"""A short run of the soak (bench/soak.py) on each loop: echo servers of
every style in a child process on the loop under test, churned for
``SECONDS`` by a client process on asyncio's loop that verifies every byte.

It passes only with zero checksum mismatches, zero unexpected errors on
either side (exception-handler calls included), no server connection left
open and no fd more at the end than at the start: the same verdict as
``python -m bench.soak``, whose details the failure message carries.
"""
import pytest

from bench import soak

from .conftest import LOOP_KINDS

SECONDS = 25
SEED = 20240610


@pytest.mark.timeout(SECONDS + soak.CLIENT_GRACE_SECONDS + soak.SETTLE_SECONDS
                     + soak.STOP_SECONDS + 60)
@pytest.mark.parametrize("kind", list(LOOP_KINDS))
def test_soak_every_byte_echoed(kind, tmp_path):
    result = soak.run_one(kind, SECONDS, SEED, workers=16, workdir=str(tmp_path))
    assert result["ok"], soak.details(result)
    client = result["client"]
    assert client["bytes_verified"] > 0 and client["connections"] > 0
    # Every server style and client behaviour took part.
    styles = {key.split("/")[0] for key in client["sessions"]}
    behaviours = {key.split("/")[1] for key in client["sessions"]}
    assert styles == {"protocol", "buffered", "streams", "tls", "sock", "udp"}
    assert behaviours >= {"echo", "half_close", "slow_reader", "abort", "cancel",
                          "connect_abort"}
