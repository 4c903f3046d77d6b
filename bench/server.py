"""What the benchmarks share: a throwaway Fondasi (daphne) started as `make run` does, in a temp
directory; a process served until it answers its health check; a free port; the shared harness
(``../shared/bench``) and the endpoint config that points Fondasi at its fake upstream."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"  # the shared harness: a fast fake upstream, wrk, an aiohttp client
HARNESS = Path(tempfile.gettempdir()) / "fondasi-peer-bench"  # where bench/gateway_cost.py sets up its copy


def shared_harness() -> Path:
    """The shared harness folder; exits naming it when it is missing."""
    if not SHARED.exists():
        sys.exit(f"The shared harness is missing: {SHARED}")
    return SHARED


def chat_endpoints(base: str, provider: str = "openai-compatible") -> str:
    """An endpoints file serving ``bench-chat`` through ``provider`` from the OpenAI-compatible API at ``base``."""
    return f"""endpoints:
  - name: bench-chat
    task: llm/v1/chat
    served_entities:
      - name: fake-gpt
        external_model:
          name: fake-gpt
          provider: {provider}
          openai_config: {{openai_api_base: "{base}", openai_api_key_plaintext: sk-fake}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list[str], health_url: str, log: Path, *, timeout: float = 60, **popen: Any) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` (its output in ``log``), yield it once ``health_url`` answers 200, stop it afterwards.

    Raises RuntimeError with the log when it exits or does not answer within ``timeout`` seconds.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


@contextlib.contextmanager
def fondasi(endpoints_file: Path | None = None, cpu: str | None = None, env: dict | None = None,
            user: tuple[str, str] | None = None):
    """Yield (base_url, token, pid) of a fresh server; stop it afterwards.

    ``user``: an optional (username, password) made a superuser, to sign in to the pages.
    """
    var = Path(tempfile.mkdtemp(prefix="fondasi-bench-"))
    environ = {**os.environ, "FONDASI_VAR_DIR": str(var), "LOG_LEVEL": "WARNING",
               "FONDASI_ENDPOINTS_FILE": str(endpoints_file or ROOT / "endpoints.yaml"), **(env or {})}
    environ.pop("DATABASE_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=environ, check=True, capture_output=True)
    subprocess.run([*manage, "load_endpoints"], env=environ, check=True, capture_output=True)
    if user is not None:
        subprocess.run([*manage, "createsuperuser", "--noinput", "--username", user[0], "--email", f"{user[0]}@example.com"],
                       env={**environ, "DJANGO_SUPERUSER_PASSWORD": user[1]}, check=True, capture_output=True)
    out = subprocess.run([*manage, "create_token", "--name", "bench", "--superuser"], env=environ, check=True, capture_output=True, text=True)
    token = out.stdout.strip().splitlines()[-1]
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "playground.asgi:application"]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    url = f"http://127.0.0.1:{port}"
    with running(cmd, url + "/healthz", var / "server.log", cwd=ROOT, env=environ) as proc:
        yield url, token, proc.pid
