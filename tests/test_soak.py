"""A short run of the soak (bench/soak.py) on each loop: echo servers of
every style in a child process on the loop under test, churned for
``SECONDS`` by a client process on asyncio's loop that verifies every byte.

It passes only with zero checksum mismatches, zero unexpected errors on
either side (exception-handler calls included), no server connection left
open and no fd more at the end than at the start: the same verdict as
``python -m bench.soak``, whose details the failure message carries.
"""
import sys

import pytest

from bench import soak

from .conftest import LOOP_KINDS

SECONDS = 25
SEED = 20240610

# asyncio's own TLS transport on CPython 3.12 (seen on 3.12.1, not on 3.11.7
# or 3.13.0) now and then leaves a closed socket registered with its
# selector: the next socket given that fd number fails in _add_reader with
# FileNotFoundError, a cancelled handle runs ("Exception in callback None():
# TypeError"), and that connection hangs.  The control run skips TLS there;
# uringloop's own run keeps every style.
CONTROL_STYLES = {
    "asyncio": tuple(style for style in soak.ALL_STYLES
                     if not (style == "tls" and sys.version_info[:2] == (3, 12))),
}


@pytest.mark.timeout(SECONDS + soak.CLIENT_GRACE_SECONDS + soak.SETTLE_SECONDS
                     + soak.STOP_SECONDS + 60)
@pytest.mark.parametrize("kind", list(LOOP_KINDS))
def test_soak_every_byte_echoed(kind, tmp_path):
    styles = CONTROL_STYLES.get(kind, soak.ALL_STYLES)
    result = soak.run_one(kind, SECONDS, SEED, workers=16, workdir=str(tmp_path),
                          styles=styles)
    assert result["ok"], soak.details(result)
    client = result["client"]
    assert client["bytes_verified"] > 0 and client["connections"] > 0
    # Every server style run and every client behaviour took part.
    behaviours = {key.split("/")[1] for key in client["sessions"]}
    assert {key.split("/")[0] for key in client["sessions"]} == set(styles)
    assert behaviours >= {"echo", "half_close", "slow_reader", "abort", "cancel",
                          "connect_abort"}
