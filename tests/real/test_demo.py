"""``make demo``, reduced (hub + edge, no database), so that it cannot rot.

The demo runs as ``make demo KEEP=1`` runs it (``python -m demo --keep``, here with
``--no-database``) with ``TMPDIR`` pointed at a directory of the test's own: every step must be
reported as passed with its checks, the printed ``export`` lines must work with the ``bao`` CLI,
and after Ctrl-C (SIGINT) nothing may be left: no file under ``TMPDIR``, nothing listening where
the demo said its servers listen. A SIGTERM in the middle of a step must clean up the same way,
and a failed check must name its step.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import demo.run as demo_run
from rig.openbao import api, bao_binary

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
STEP_NAMES = [name for name, _ in demo_run.STEPS]


class RunningDemo:
    """``python -m demo`` as a child process, its output read line by line in a thread."""

    def __init__(self, tmpdir: Path, *args: str) -> None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_")) and k != "KEEP"}
        env["TMPDIR"] = str(tmpdir)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo", *args],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first output line matching ``pattern`` (earlier lines are kept in ``lines``)."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if re.search(pattern, line):
                return line
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the demo ended before printing {pattern!r}:\n{self.output}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.output}")

    def finish(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            self.process.send_signal(signal.SIGUSR1)  # the demo prints every thread's stack
            time.sleep(2)
        self._reader.join(timeout=10)
        while (line := self._queue.get_nowait() if not self._queue.empty() else None) is not None:
            self.lines.append(line)
        if code is None:
            raise AssertionError(f"the demo did not exit within {timeout} s:\n{self.output}")
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def listeners(self) -> list[tuple[str, int]]:
        found = []
        for line in self.lines:
            match = re.search(r"listening: .* at (\S+)", line)
            if match:
                url = urllib.parse.urlsplit(match.group(1))
                found.append((url.hostname or "", int(url.port or 0)))
        return found


def listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def left_behind(tmpdir: Path) -> list[str]:
    """Files under ``tmpdir`` and processes whose command line names it."""
    found = [str(p) for p in tmpdir.rglob("*")]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(tmpdir) in cmdline:
                found.append(f"pid {entry.name}: {cmdline}")
    return found


def test_the_reduced_demo_proves_every_step_keeps_running_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    run = RunningDemo(tmpdir, "--no-database", "--keep")
    try:
        run.wait_for(r"^# the edge edge-eu: an admin token", timeout=150)
        run.wait_for(r"^export VAULT_ADDR=https://127\.0\.0\.1:\d+ .*/edge/", timeout=10)  # the last line
        output = run.output
        for index, name in enumerate(STEP_NAMES, 1):
            assert f"[{index}/{len(STEP_NAMES)}] {name}" in output
        for name in STEP_NAMES[:-1]:
            assert re.search(rf"^  PASS {re.escape(name)} +[0-9.]+ s  [1-9][0-9]* checks? held$", output, re.M), name
        assert re.search(r"^  SKIP database +--no-database$", output, re.M)
        assert "FAILED" not in output
        passed = re.search(r"^all steps passed in ([0-9.]+) s$", output, re.M)
        assert passed, output
        steps_seconds = float(passed.group(1))
        print(f"reduced demo: steps took {steps_seconds:.1f} s")
        assert steps_seconds < 60

        # the hub's export block works with the bao CLI: 3 voters
        hub_block = next(line for line in run.lines if line.startswith("export BAO_ADDR="))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env |= dict(part.split("=", 1) for part in hub_block.removeprefix("export ").split())
        env["HOME"] = str(tmp_path)  # a CLI login would write ~/.vault-token: keep it in the test's directory
        peers = subprocess.run(
            [bao_binary(), "operator", "raft", "list-peers", "-format=json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert peers.returncode == 0, peers.stderr
        assert peers.stdout.count('"voter": true') == 3, peers.stdout
        assert output.count("\nexport BAO_ADDR=") == 2 and output.count("\nexport VAULT_ADDR=") == 2

        listeners = run.listeners()
        assert len(listeners) == 6  # 3 hub nodes, the edge node, two Kubernetes APIs
        assert all(listening(*hp) for hp in listeners)

        run.process.send_signal(signal.SIGINT)
        assert run.finish(timeout=60) == 0, run.output
    finally:
        run.kill()
    assert re.search(r"^cleanup: 6 servers stopped, nothing listening any more, ", run.output, re.M), run.output
    assert not [hp for hp in listeners if listening(*hp)]
    assert left_behind(tmpdir) == []


def test_sigterm_during_a_step_stops_everything(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    run = RunningDemo(tmpdir, "--no-database")
    try:
        run.wait_for(r"listening: hub Vault vault-2 ", timeout=60)  # the bootstrap Job starts now
        run.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert run.finish(timeout=60) == 128 + signal.SIGTERM, run.output
        assert time.monotonic() - sent < 10, run.output  # not after the bootstrap Job's end
    finally:
        run.kill()
    assert "interrupted by SIGTERM during step hub-cluster: stopping" in run.output
    assert re.search(r"^cleanup: \d+ servers stopped, nothing listening any more, ", run.output, re.M), run.output
    assert not [hp for hp in run.listeners() if listening(*hp)]
    assert left_behind(tmpdir) == []


def test_a_failed_check_names_its_step_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: demo_run.Demo) -> None:
        demo_run.check(False, "the hub could not be reached (test)")

    monkeypatch.setattr(demo_run.Demo, "hub_cluster", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    out = io.StringIO()
    assert demo_run.main(["--no-database"], out=out) == 1
    text = out.getvalue()
    assert "FAILED at step hub-cluster: the hub could not be reached (test)" in text
    assert re.search(r"^  PASS plan", text, re.M) is None  # no summary after a failure
    assert list(tmp_path.iterdir()) == []


def test_signals_reach_the_main_thread_while_the_kubernetes_apis_serve(tmp_path: Path) -> None:
    """A signal the kernel hands to a server thread would not wake the main thread from a blocking
    wait (the demo would hang until that wait ends): the servers' threads block SIGINT and SIGTERM."""
    before = {t.native_id for t in threading.enumerate()}
    with contextlib.ExitStack() as stack:
        demo = demo_run.Demo(demo_run.Report(io.StringIO()), stack, tmp_path, database=False)
        kube = demo.kube_api()
        assert api(kube.url, "GET", "version", ca_file=kube.ca_file).status in (200, 404)
        started = [t.native_id for t in threading.enumerate() if t.native_id not in before]
        checked = 0
        for tid in started:
            try:
                status = Path(f"/proc/self/task/{tid}/status").read_text()
            except FileNotFoundError:
                continue  # a connection's thread that has finished since: nothing left to signal
            checked += 1
            blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
            for sig in (signal.SIGINT, signal.SIGTERM):
                assert blocked & (1 << (sig - 1)), (tid, sig.name)
        assert checked, "no server thread was alive to check (the accept loop always is)"
    main = Path(f"/proc/self/task/{threading.main_thread().native_id}/status").read_text()
    assert int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", main, re.M).group(1), 16) & (1 << (signal.SIGINT - 1)) == 0  # type: ignore[union-attr]
