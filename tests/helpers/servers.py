"""Real servers for tests, on loopback only: a throwaway PostgreSQL cluster (Debian's `postgresql` package) and
`mlflow server` on any backend store. Each starts in seconds, lives in a temporary folder and is stopped by its
owner (a fixture's teardown). Also talking to a server the raw way (HTTP/1.1 exchanges written out byte for byte,
bodies too big to hold in memory) and watching its process tree (/proc): what the serve tests and
bench/serve_doors.py do to `dermsweep serve`."""

from __future__ import annotations

import glob
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
# MLflow 3's server starts job runners (GenAI evaluation, trace roll-ups) beside a database backend: a handful of
# processes that tracking does not need, and that a SIGKILL of the server would leave behind.
SERVER_ENV = {**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a server started in its own session (start_new_session=True), then make sure it is gone."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def start_mlflow_server(folder: Path, backend: str | None = None, env: dict | None = None) -> tuple:
    """`mlflow server` on 127.0.0.1 (one worker), artifacts proxied into `folder`/art; backend default SQLite
    in `folder`. Returns (process, URL)."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend or f"sqlite:///{folder}/server.db",
            "--artifacts-destination",
            f"{folder}/art",
            "--workers",
            "1",
        ],
        cwd=folder,
        env=env or SERVER_ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "mlflow-server.log", "w"),  # noqa: SIM115 (kept open for the server's life)
    )
    import requests

    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            break
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return server, f"http://127.0.0.1:{port}"
        except requests.RequestException:
            time.sleep(0.5)
    stop(server, signal.SIGKILL)
    log = (folder / "mlflow-server.log").read_text()[-3000:]
    pytest.fail(f"mlflow server did not start in 120 s:\n{log}")


# ----------------------------------------------------------------------------------------------- PostgreSQL
def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, postgres), or None when it is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def postgres_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (initdb not found): apt-get install postgresql (.ci/run does)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    return None


class Postgres:
    """A throwaway PostgreSQL cluster: initdb into a temporary folder, listening on 127.0.0.1 and a Unix socket in
    that folder, trust authentication for its one role, no fsync (nothing in it needs to survive a crash)."""

    USER = "dermsweep"

    def __init__(self) -> None:
        self.bin = postgres_bin()
        assert self.bin is not None
        # Not under pytest's tmp_path: as root, the server runs as another user, who cannot enter pytest's 0700
        # folders. PostgreSQL refuses to run as root.
        self.root = Path(tempfile.mkdtemp(prefix="dermsweep-pg-"))
        self.run_as: dict = {}
        if os.geteuid() == 0:
            import pwd

            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
                os.chown(self.root, pw.pw_uid, pw.pw_gid)
                break
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            **self.run_as,
        )

    def start(self) -> Postgres:
        done = self._run("initdb", "-D", str(self.root / "data"), "-U", self.USER, "--auth=trust", "-E", "UTF8")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.root / "data"),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            cwd=self.root,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "postgres.log", "w"),  # noqa: SIM115
            **self.run_as,
        )
        import psycopg

        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("PostgreSQL did not start in 60 s")

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URL (psycopg 3), as Optuna and MLflow take it."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- raw HTTP
def http(port: int, head: str, body: bytes = b"", timeout: float = 60) -> tuple[int, bytes]:
    """One raw HTTP/1.1 exchange (headers exactly as given). Returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def post(port: int, body: bytes, extra: str = "", content_type: str | None = "application/json") -> tuple[int, bytes]:
    """POST /invocations (MLflow's scoring protocol) with `body`; `extra` header lines appended."""
    head = f"POST /invocations HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\nContent-Length: {len(body)}\n"
    if content_type:
        head += f"Content-Type: {content_type}\n"
    return http(port, head + extra, body)


def huge_body(port: int, megabytes: int, declare_length: bool) -> int:
    """Stream a JSON body holding a `megabytes` MB base64 string; stop sending once the server answers."""
    total = megabytes * 1024 * 1024
    head = f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {total}\r\n" if declare_length else "Transfer-Encoding: chunked\r\n"
    block = b"QUFB" * (256 * 1024)  # 1 MiB of base64
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall((head + "\r\n").encode())
        sent = 0
        try:
            piece = b'{"dataframe_records": [{"image": "'
            while sent < total:
                data = piece if declare_length else b"%x\r\n%s\r\n" % (len(piece), piece)
                s.sendall(data)
                sent += len(piece)
                piece = block
                if select.select([s], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(65536)
    return int(answer.split()[1])


# ----------------------------------------------------------------------------------------------- process trees
def tree_of(pid: int) -> set[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def rss_mb(pids: set[int]) -> float:
    """The resident memory of these processes together, in MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
