"""Start a throwaway Fondasi (daphne) for a benchmark, as `make run` does, in a temp directory."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


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
    out = subprocess.run([*manage, "create_token", "--name", "bench"], env=environ, check=True, capture_output=True, text=True)
    token = out.stdout.strip().splitlines()[-1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "playground.asgi:application"]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    log = open(var / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((var / "server.log").read_text())
            time.sleep(0.2)
        yield url, token, proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
