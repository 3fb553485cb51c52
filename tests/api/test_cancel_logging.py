"""A client that cancels a call mid-way (an Explain waiting on the device, a Maximize stream
between frames) is routine, not an error: the server logs no ERROR line and no traceback for
it, neither through Python logging nor on stderr (gRPC's own C-core log)."""

from __future__ import annotations

import logging
import re
import threading
import time

import grpc
from explainserve.config import BatchingConfig
from explainserve_client import Client
from support import random_input, running_server, tiny_config

# 0.3 s per device pass of one row: an occlusion of 17 rows takes 5 s.
SLOW = tiny_config("slow_cancel", "build_sleepy", batching=BatchingConfig(max_batch_size=1))


def without_stale_handler_reports(stderr: str) -> str:
    """stderr without Python logging's reports about a handler whose stream is closed (a CLI
    test earlier in the session configures logging onto its captured stderr)."""
    parts = stderr.split("--- Logging error ---")
    return parts[0] + "".join(part for part in parts[1:]
                              if "I/O operation on closed file" not in part)


def test_cancelled_explain_and_maximize_calls_log_no_error(caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with running_server((SLOW,)) as server, Client(server.address, timeout=60) as client:
        # Explain: occlusion of 16 positions, one 0.3 s pass after another; cancelled at 0.5 s.
        request = client.explain_request(random_input((3, 8, 8)), "slow_cancel", "occlusion",
                                         targets=[0], window=2, stride=2)
        call = client.stub.Explain(request, timeout=60)
        threading.Timer(0.5, call.cancel).start()
        try:
            list(call)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED
        # Maximize: leave the frame loop after the first frame; the client cancels the stream.
        frames = client.maximize_frames("slow_cancel", [0], steps=50, frame_every=1)
        next(frames)
        frames.close()
        time.sleep(1.0)  # the server notices both cancels and unwinds
        # The server still serves.
        assert client.list_models()[0].name == "slow_cancel"
    ended = [record.getMessage() for record in caplog.records if " ended " in record.getMessage()]
    # Both calls were cancelled mid-way and the server saw it (not a finished call).
    assert any(m.startswith("Explain model=slow_cancel") and "ended CANCELLED" in m for m in ended), ended
    assert any(m.startswith("Maximize model=slow_cancel") and "ended CANCELLED" in m for m in ended), ended
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], [record.getMessage() for record in errors]
    assert not any(record.exc_info for record in caplog.records if record.levelno >= logging.WARNING)
    stderr = without_stale_handler_reports(capfd.readouterr().err)
    # gRPC C-core writes errors as "E1202 01:02:03.456789 ..." lines.
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert not re.search(r"^E\d{4} ", stderr, re.MULTILINE), stderr
