"""Trigger interop peer built on the official Python SDK (PyPI iii-sdk 0.25.0, import `iii`).

usage:
  python tests/interop/py_trigger_peer.py --url URL --name NAME provide --type T --prefix P
  python tests/interop/py_trigger_peer.py --url URL --name NAME bind --type T --function F \
      [--config JSON] [--ready-probe]

Every stdout line is one JSON object (an "event"); logs go to stderr. Both modes run until stdin
reaches EOF or SIGTERM/SIGINT, then call `iii.shutdown()` and exit 0.

provide: registers trigger type T with a TriggerHandler and a function P::ping, calls P::ping
  through the engine (so the engine has processed the type), then prints {"event":"ready"}.
  For every binding delivered: {"event":"registered","id","function_id","config","metadata"};
  a config {"fail": why} makes the handler raise RuntimeError(why) (the SDK answers
  trigger_registration_failed); otherwise the handler fires the bound function once with
  payload {"trigger": id, "config": config} and prints {"event":"fired","id","result"} (or
  {"event":"fire_failed","id","code","message"}). Unbinding prints {"event":"unregistered","id",
  "function_id","config"} (what the SDK hands the handler).
bind: registers function F (prints {"event":"called","payload"} and returns {"peer":"py"}),
  binds it to T with config, prints {"event":"bound","id"}. With --ready-probe it first
  registers and calls F::probe through the engine and prints {"event":"ready"} after binding.
  An error the engine forwards for the binding (the SDK only logs it) is printed as
  {"event":"trigger_error","message"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import Any

from iii import InitOptions, InvocationError, register_worker
from iii.triggers import TriggerConfig, TriggerHandler
from peer_stop import wait_for_stop  # type: ignore[import-not-found]  # run as a script

_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Handler(TriggerHandler[Any]):  # type: ignore[misc]
    def __init__(self, iii: Any) -> None:
        self.iii = iii
        self.tasks: set[asyncio.Task[None]] = set()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        emit(
            {
                "event": "registered",
                "id": config.id,
                "function_id": config.function_id,
                "config": config.config,
                "metadata": config.metadata,
            }
        )
        if isinstance(config.config, dict) and "fail" in config.config:
            raise RuntimeError(str(config.config["fail"]))
        task = asyncio.get_running_loop().create_task(self.fire(config))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def fire(self, config: TriggerConfig[Any]) -> None:
        payload = {"trigger": config.id, "config": config.config}
        try:
            result = await self.iii.trigger_async(
                {"function_id": config.function_id, "payload": payload}
            )
        except InvocationError as err:
            emit(
                {"event": "fire_failed", "id": config.id, "code": err.code, "message": err.message}
            )
            return
        emit({"event": "fired", "id": config.id, "result": result})

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        emit(
            {
                "event": "unregistered",
                "id": config.id,
                "function_id": config.function_id,
                "config": config.config,
            }
        )


class ForwardedErrors(logging.Handler):
    """The SDK only logs a forwarded triggerregistrationresult error; turn it into an event."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Trigger registration failed" in message:
            emit({"event": "trigger_error", "message": message})


def probe(iii: Any, function_id: str) -> None:
    """Round trip through the engine: everything sent before it has been processed."""
    iii.trigger(
        {"function_id": function_id, "payload": {}, "dispatch": "remote", "timeout_ms": 10000}
    )


def provide(iii: Any, args: argparse.Namespace) -> int:
    iii.register_trigger_type(
        {"id": args.type, "description": f"{args.type} from the py peer"}, Handler(iii)
    )

    async def ping(data: Any) -> Any:
        return "pong"

    iii.register_function(f"{args.prefix}::ping", ping)
    probe(iii, f"{args.prefix}::ping")
    emit({"event": "ready"})
    wait_for_stop()
    return 0


def bind(iii: Any, args: argparse.Namespace) -> int:
    async def handler(data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "_caller_worker_id"}
        emit({"event": "called", "payload": data})
        return {"peer": "py"}

    iii.register_function(args.function, handler)
    if args.ready_probe:

        async def noop(data: Any) -> Any:
            return None

        iii.register_function(f"{args.function}::probe", noop)
        probe(iii, f"{args.function}::probe")
    trigger = iii.register_trigger(
        {"type": args.type, "function_id": args.function, "config": json.loads(args.config)}
    )
    emit({"event": "bound", "id": next(iter(iii._triggers))})  # the SDK keeps the id private
    if args.ready_probe:
        probe(iii, f"{args.function}::probe")
        emit({"event": "ready"})
    wait_for_stop()
    del trigger
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("mode", choices=["provide", "bind"])
    ap.add_argument("--type", required=True)
    ap.add_argument("--prefix")
    ap.add_argument("--function")
    ap.add_argument("--config", default="null")
    ap.add_argument("--ready-probe", action="store_true")
    args = ap.parse_args()
    if (args.mode == "provide") != bool(args.prefix) or (args.mode == "bind") != bool(
        args.function
    ):
        ap.error("provide needs --prefix; bind needs --function")
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("PEER_LOG_LEVEL", "WARNING"),
        format="[py-trigger-peer %(name)s] %(levelname)s %(message)s",
    )
    logging.getLogger("iii").addHandler(ForwardedErrors())
    warnings.simplefilter("ignore", DeprecationWarning)  # 0.25.0 deprecates the trigger API
    os.environ.pop("III_WORKER_NAME", None)  # the SDK lets it override worker_name
    iii = register_worker(args.url, InitOptions(worker_name=args.name, otel={"enabled": False}))
    try:
        return provide(iii, args) if args.mode == "provide" else bind(iii, args)
    finally:
        iii.shutdown()


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        code = 2
    sys.exit(code)
