"""Trigger types and bindings between our SDK and the official Python SDK (iii-sdk 0.25.0),
through our engine, both ways: official provider + our binder, and our provider + official
binder (including a binding made before its type exists and a refused binding)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio

import iii_trio
from tests.interop.peers import HERE, peer_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.interop

TIMEOUT = 30
PEER = HERE / "py_trigger_peer.py"


class Peer:
    """A running py_trigger_peer.py; :meth:`event` reads its JSON event lines in order."""

    def __init__(self, proc: trio.Process, stderr: bytearray) -> None:
        self.proc = proc
        self.stderr = stderr
        self._buffer = b""
        self._backlog: list[dict[str, Any]] = []

    async def event(self, name: str) -> dict[str, Any]:
        """The first not yet consumed event called ``name`` (others stay for later calls)."""
        assert self.proc.stdout is not None
        with trio.fail_after(TIMEOUT):
            while True:
                for i, obj in enumerate(self._backlog):
                    if obj.get("event") == name:
                        return self._backlog.pop(i)
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    if line.startswith(b"{"):
                        self._backlog.append(json.loads(line))
                if any(obj.get("event") == name for obj in self._backlog):
                    continue
                chunk = await self.proc.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"peer exited before {name!r}:\n{self.stderr.decode()}")
                self._buffer += chunk

    async def stop(self) -> None:
        """Close stdin: the peer shuts its SDK down and exits."""
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()


@asynccontextmanager
async def trigger_peer(url: str, name: str, *args: str) -> AsyncIterator[Peer]:
    cmd = [sys.executable, str(PEER), "--url", url, "--name", name, *args]
    proc = await trio.lowlevel.open_process(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=peer_env()
    )
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            stderr.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_stderr)
        try:
            yield Peer(proc, stderr)
        finally:
            with trio.CancelScope(shield=True):
                assert proc.stdin is not None
                await proc.stdin.aclose()
                with trio.move_on_after(20):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            nursery.cancel_scope.cancel()
    assert proc.returncode == 0, stderr.decode()


class Recorder:
    """Our trigger handler: fires every binding once and records what happened."""

    def __init__(self) -> None:
        self.registered: list[iii_trio.TriggerBinding] = []
        self.unregistered: list[str] = []
        self.fired: dict[str, Any] = {}
        self._event = trio.Event()

    def _changed(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self, predicate: Any) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate():
                await self._event.wait()

    async def register_trigger(self, binding: iii_trio.TriggerBinding) -> None:
        if isinstance(binding.config, dict) and "fail" in binding.config:
            raise ValueError(binding.config["fail"])
        self.registered.append(binding)
        self._changed()
        binding.start_soon(self._fire, binding)

    async def _fire(self, binding: iii_trio.TriggerBinding) -> None:
        self.fired[binding.id] = await binding.fire(
            {"trigger": binding.id, "config": binding.config}
        )
        self._changed()
        await trio.sleep_forever()

    async def unregister_trigger(self, binding: iii_trio.TriggerBinding) -> None:
        self.unregistered.append(binding.id)
        self._changed()


# --- official provider, our binder ------------------------------------------------------------


async def test_official_provider_our_binder(iii_engine, iii_worker) -> None:
    async with trigger_peer(
        iii_engine.url, "py-provider", "provide", "--type", "py::tick", "--prefix", "pyp"
    ) as peer:
        await peer.event("ready")
        binder = await iii_worker(name="our-binder")
        called = trio.Event()
        payloads: list[Any] = []

        async def on_tick(payload: Any) -> Any:
            payloads.append(payload)
            called.set()
            return {"ours": True}

        binder.register_function("ours::on_tick", on_tick)
        await iii_engine.wait_function("ours::on_tick")
        ref = binder.register_trigger(
            "py::tick", "ours::on_tick", {"every": 3}, metadata={"m": "x"}
        )

        registered = await peer.event("registered")
        assert registered == {
            "event": "registered",
            "id": ref.id,
            "function_id": "ours::on_tick",
            "config": {"every": 3},
            "metadata": {"m": "x"},
        }
        fired = await peer.event("fired")
        assert fired == {"event": "fired", "id": ref.id, "result": {"ours": True}}
        with trio.fail_after(TIMEOUT):
            await called.wait()
        assert payloads[0]["trigger"] == ref.id
        assert payloads[0]["config"] == {"every": 3}
        # The official SDK acknowledges with an error-less triggerregistrationresult.
        with trio.fail_after(TIMEOUT):
            await iii_engine.wait_until(lambda e: e._router.triggers.bindings[ref.id].acknowledged)
            types = await binder.trigger("engine::triggers::list", {"prefix": "py::"})
        assert types == {
            "triggers": [
                {
                    "id": "py::tick",
                    "namespace": "default",
                    "worker_name": "py-provider",
                    "description": "py::tick from the py peer",
                }
            ]
        }

        ref.unregister()
        unregistered = await peer.event("unregistered")
        assert unregistered["id"] == ref.id
        # iii's unregistertrigger carries only id and trigger_type, so the official SDK hands
        # its handler an empty function_id and no config.
        assert unregistered["function_id"] == ""
        assert unregistered["config"] is None

        # A refusal by the official provider reaches our binder.
        refused = binder.register_trigger("py::tick", "ours::on_tick", {"fail": "no such schedule"})
        with trio.fail_after(TIMEOUT):
            error = await refused.wait_failed()
        assert error.code == "trigger_registration_failed"
        assert error.message == "no such schedule"
        assert (await peer.event("registered"))["id"] == refused.id

        # A binder that goes away: the official provider is told.
        async with iii_trio.connect_worker(iii_engine.url, name="brief-binder") as brief:
            gone = brief.register_trigger("py::tick", "ours::on_tick", {"brief": True})
            assert (await peer.event("registered"))["id"] == gone.id
        assert (await peer.event("unregistered"))["id"] == gone.id


# --- our provider, official binder ------------------------------------------------------------


async def test_our_provider_official_binder(iii_engine, iii_worker) -> None:
    provider = Recorder()
    source = await iii_worker(name="our-provider")
    # The official binder binds before the type exists; the engine parks it.
    async with trigger_peer(
        iii_engine.url,
        "py-binder",
        "bind",
        "--type",
        "ours::tick",
        "--function",
        "pyb::on_tick",
        "--config",
        json.dumps({"k": [1, 2]}),
        "--ready-probe",
    ) as peer:
        await peer.event("ready")
        bound = await peer.event("bound")
        binding_id = bound["id"]
        with trio.fail_after(TIMEOUT):
            await iii_engine.wait_until(
                lambda e: e._router.triggers.status(binding_id) == "pending"
            )
        source.register_trigger_type("ours::tick", provider, description="ours")
        called = await peer.event("called")
        assert called["payload"] == {"trigger": binding_id, "config": {"k": [1, 2]}}
        await provider.wait(lambda: binding_id in provider.fired)
        assert provider.fired[binding_id] == {"peer": "py"}
        [binding] = provider.registered
        assert binding.function_id == "pyb::on_tick"
        with trio.fail_after(TIMEOUT):
            listed = await source.trigger(
                "engine::registered-triggers::list", {"trigger_type": "ours::tick"}
            )
        [row] = listed["registered_triggers"]
        assert (row["id"], row["function_id"], row["worker_name"], row["status"]) == (
            binding_id,
            "pyb::on_tick",
            "py-binder",
            "active",
        )
        await peer.stop()  # the official binder shuts down: our provider's binding goes
        await provider.wait(lambda: provider.unregistered == [binding_id])
        assert not binding.active


async def test_our_refusal_reaches_the_official_binder(iii_engine, iii_worker) -> None:
    provider = Recorder()
    source = await iii_worker(name="our-provider")
    source.register_trigger_type("ours::strict", provider)
    async with trigger_peer(
        iii_engine.url,
        "py-binder",
        "bind",
        "--type",
        "ours::strict",
        "--function",
        "pyb::f",
        "--config",
        json.dumps({"fail": "schedule is malformed"}),
    ) as peer:
        error = await peer.event("trigger_error")
        assert "schedule is malformed" in error["message"]
        assert "ours::strict" in error["message"]
    assert provider.registered == []
