"""Honest devices polling a real `modelfleet gateway` process while 50 hostile clients abuse it, on loopback.

The gateway runs as its own process with its default limits (tests/gateway_process.py starts it, as the attack
tests do). Honest devices (asyncio tasks in this process, one aiohttp pool from 127.0.0.1) enrol and then poll
their desired state every --interval seconds, as agents do. Hostile clients run in a separate process, each from
its own loopback address (127.0.1.1 to 127.0.1.50), each repeating without a credential:
  - an enrolment that declares a 100 MiB body and sends it in 1 MiB chunks,
  - a chunked report body that never ends,
  - a body that declares 5,000 bytes, sends 10 and stalls,
  - request headers dripped one byte every 0.2 s,
  - a 1 MiB Authorization header.

Two phases, measured the same way: honest devices alone (baseline), then with the hostile clients. Printed per
phase: the honest polls' p50/p99 (client side), errors, the gateway's peak RSS and CPU.
Targets (2-core machine): RSS under 300 MB and honest poll p99 under 50 ms while under abuse.
Usage: python bench/gateway_abuse.py [--devices 500] [--interval 5] [--seconds 60] [--hostile 50] [--json PATH]
"""

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_process import GatewayProcess  # noqa: E402
from gateway_world import NAMESPACE, TOKEN  # noqa: E402

MIB = b"x" * (1 << 20)


# --- the hostile clients (a process of their own) -------------------------------------------------------------


async def _open(port: int, source: str):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _drain_and_close(reader, writer, seconds: float) -> None:
    try:
        await asyncio.wait_for(reader.read(65536), seconds)
    except (TimeoutError, ConnectionError, OSError):
        pass
    writer.close()


async def _huge_declared(port, source):
    reader, writer = await _open(port, source)
    writer.write(b"POST /v1/enroll HTTP/1.1\r\nHost: gw\r\nContent-Length: 104857600\r\n\r\n")
    for _ in range(100):
        writer.write(MIB)
        await writer.drain()
    await _drain_and_close(reader, writer, 5)


async def _endless_chunked(port, source):
    reader, writer = await _open(port, source)
    writer.write(f"POST /v1/devices/{NAMESPACE}/nobody/report HTTP/1.1\r\nHost: gw\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    for _ in range(100):
        writer.write(b"100000\r\n" + MIB + b"\r\n")
        await writer.drain()
    await _drain_and_close(reader, writer, 5)


async def _stalled_body(port, source):
    reader, writer = await _open(port, source)
    writer.write(b"POST /v1/enroll HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n\r\n{\"namespa")
    await writer.drain()
    await _drain_and_close(reader, writer, 60)


async def _dripped_headers(port, source):
    reader, writer = await _open(port, source)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
    for byte in b"X-Drip: " + b"a" * 300:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)
    await _drain_and_close(reader, writer, 5)


async def _huge_header(port, source):
    reader, writer = await _open(port, source)
    writer.write(b"GET /v1/devices/x/y/desired-state HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + MIB + b"\r\n\r\n")
    await writer.drain()
    await _drain_and_close(reader, writer, 5)


ATTACKS = (_huge_declared, _endless_chunked, _stalled_body, _dripped_headers, _huge_header)


async def _hostile(port: int, source: str, until: float, counts: dict) -> None:
    while time.monotonic() < until:
        for attack in ATTACKS:
            try:
                await asyncio.wait_for(attack(port, source), 90)
                counts[attack.__name__] = counts.get(attack.__name__, 0) + 1
            except (ConnectionError, OSError, TimeoutError):
                counts["refused"] = counts.get("refused", 0) + 1  # closed on it: what the limits do


def hostile_process(port: int, clients: int, seconds: float, result) -> None:
    async def main():
        counts: dict = {}
        until = time.monotonic() + seconds
        await asyncio.gather(*(_hostile(port, f"127.0.1.{i + 1}", until, counts) for i in range(clients)))
        result.update(counts)

    asyncio.run(main())


# --- honest devices ---------------------------------------------------------------------------------------------


class Honest:
    def __init__(self, url: str, session: aiohttp.ClientSession, count: int):
        self.url, self.session = url, session
        self.devices = [f"dev-{i:05d}" for i in range(count)]
        self.credentials: dict[str, str] = {}
        self.etags: dict[str, str] = {}
        self.poll_ms: list[float] = []
        self.errors = 0

    async def enrol(self, device: str) -> None:
        body = {"namespace": NAMESPACE, "device": device, "labels": {"modelfleet.io/class": "phone"},
                "agentVersion": "0.1.0"}
        async with self.session.post(f"{self.url}/v1/enroll", json=body,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            response.raise_for_status()
            self.credentials[device] = (await response.json())["credential"]

    async def poll(self, device: str) -> None:
        headers = {"Authorization": f"Bearer {self.credentials[device]}"}
        if device in self.etags:
            headers["If-None-Match"] = self.etags[device]
        started = time.perf_counter()
        try:
            async with self.session.get(f"{self.url}/v1/devices/{NAMESPACE}/{device}/desired-state",
                                        headers=headers) as response:
                await response.read()
                if response.status not in (200, 304):
                    self.errors += 1
                    return
                self.etags[device] = response.headers.get("ETag", "")
        except (aiohttp.ClientError, TimeoutError):
            self.errors += 1
            return
        self.poll_ms.append((time.perf_counter() - started) * 1000)

    async def run(self, interval: float, seconds: float) -> None:
        async def device_loop(device):
            await asyncio.sleep(np.random.uniform(0, interval))
            next_at, until = time.monotonic(), time.monotonic() + seconds
            while time.monotonic() < until:
                await self.poll(device)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.gather(*(device_loop(d) for d in self.devices))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


async def phase(gateway: GatewayProcess, honest: Honest, args, hostile: bool) -> dict:
    honest.poll_ms.clear()
    errors, cpu0, started = honest.errors, cpu_seconds(gateway.process.pid), time.monotonic()
    rss = [gateway.rss_mb()]
    manager_result, attacker = None, None
    if hostile:
        manager_result = multiprocessing.Manager().dict()
        attacker = multiprocessing.Process(target=hostile_process,
                                           args=(gateway.port, args.hostile, args.seconds, manager_result))
        attacker.start()

    async def sample():
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(1)
            rss.append(gateway.rss_mb())

    await asyncio.gather(honest.run(args.interval, args.seconds), sample())
    elapsed = time.monotonic() - started
    if attacker is not None:
        attacker.join(timeout=120)
    p50, p99 = (np.percentile(honest.poll_ms, q) for q in (50, 99)) if honest.poll_ms else (float("nan"),) * 2
    return {"polls": len(honest.poll_ms), "poll_p50_ms": round(float(p50), 2), "poll_p99_ms": round(float(p99), 2),
            "errors": honest.errors - errors, "gateway_peak_rss_mb": round(max(rss), 1),
            "gateway_cpu_cores": round((cpu_seconds(gateway.process.pid) - cpu0) / elapsed, 3),
            **({"hostile_attempts": dict(manager_result)} if manager_result is not None else {})}


async def bench(args) -> dict:
    for i in range(args.hostile):  # every hostile client has its own loopback address
        with socket.socket() as s:
            s.bind((f"127.0.1.{i + 1}", 0))
    gateway = GatewayProcess(Path(tempfile.mkdtemp(prefix="modelfleet-abuse-bench-")))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32),
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            honest = Honest(gateway.url, session, args.devices)
            await asyncio.gather(*(honest.enrol(d) for d in honest.devices))
            figures = {"devices": args.devices, "interval_s": args.interval, "seconds": args.seconds,
                       "hostile_clients": args.hostile}
            figures["baseline"] = await phase(gateway, honest, args, hostile=False)
            print("baseline:", json.dumps(figures["baseline"]), flush=True)
            figures["under_abuse"] = await phase(gateway, honest, args, hostile=True)
            print("under abuse:", json.dumps(figures["under_abuse"]), flush=True)
    finally:
        gateway.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--interval", type=float, default=5.0, help="honest poll interval, seconds")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--hostile", type=int, default=50, help="hostile clients, each from its own address")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(bench(args))
    abuse = figures["under_abuse"]
    ok_rss, ok_p99 = abuse["gateway_peak_rss_mb"] < 300, abuse["poll_p99_ms"] < 50
    print(f"\nunder abuse: gateway peak RSS {abuse['gateway_peak_rss_mb']} MB (target < 300: "
          f"{'met' if ok_rss else 'MISSED'}), honest poll p99 {abuse['poll_p99_ms']} ms (target < 50: "
          f"{'met' if ok_p99 else 'MISSED'}); baseline p99 {figures['baseline']['poll_p99_ms']} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok_rss and ok_p99 else 1


if __name__ == "__main__":
    sys.exit(main())
