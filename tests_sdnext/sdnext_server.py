"""Run the real SD.Next (built by build_sdnext.py) as a subprocess, with this checkout installed.

Used by the `make test-sdnext` tests; also handy by hand:

    .venv/bin/python -m tests_sdnext.sdnext_server --theme Modern    # prints the URL, Ctrl-C stops

Each `SdnextSite` is one user data folder (`--data-dir`: config.json, extensions/, outputs/,
the log): the extension is installed there as SD.Next's extension manager does, with a
`git clone` of a repository holding this checkout's files (tracked and untracked, not ignored),
so uncommitted work is what gets tested. Servers started on a site share its state between
launches, like one user's install restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / os.environ.get("FRAMEPACK_SDNEXT_CACHE", "build/sdnext")  # relative to the project root
EXTENSION_FOLDER = "framepack-sdnext"  # anything but sd-extension-framepack (SD.Next disables that name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def snapshot_repository(target: Path) -> Path:
    """A git repository with this checkout's current files (what `git clone URL` would fetch)."""
    files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    target.mkdir(parents=True)
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file() or source.is_symlink():
            continue  # deleted in the work tree, or a link such as .venv
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    git("init", "-q", "-b", "main", cwd=target)
    git("add", "-A", cwd=target)
    git("commit", "-q", "-m", "snapshot of the checkout under test", cwd=target)
    return target


class SdnextSite:
    """One SD.Next user data folder with this extension installed."""

    def __init__(self, root: Path, cache: Path = CACHE) -> None:
        self.root = Path(root).resolve()
        self.cache = cache
        self.app = cache / "app"
        self.python = cache / "venv" / "bin" / "python"
        self.data = self.root / "data"
        self.extension = self.data / "extensions" / EXTENSION_FOLDER
        if not (cache / "ready").is_file():
            raise RuntimeError(f"SD.Next is not built in {cache}: run `python3 tests_sdnext/build_sdnext.py` "
                               "(or `make test-sdnext`)")

    def install_extension(self) -> None:
        """Extensions -> Manual install: a git clone into the extensions folder."""
        shutil.rmtree(self.root / "origin", ignore_errors=True)
        repository = snapshot_repository(self.root / "origin")
        self.extension.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", str(repository), str(self.extension), cwd=self.root)

    @property
    def config_file(self) -> Path:
        return self.data / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def update_config(self, **values: Any) -> None:
        """Edit config.json between launches (what Settings -> Apply writes)."""
        data = self.config()
        data.update(values)
        self.data.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(data, indent=2), encoding="utf-8")

    def full_launch(self, timeout: float = 1800.0) -> "SdnextServer":
        """`launch.py --test`: a full launch (extension installers run, the UI is built) that exits.

        SD.Next runs extension installers only on a full launch. Its normal launches are "quick"
        whenever the SD.Next folder is not a git checkout (it then skips its git-based state check),
        as with the vendored snapshot: `--test` is its own way to get the full one.
        """
        server = SdnextServer(self, ["--test"])
        server.run_to_exit(timeout)
        return server

    def pip_freeze(self) -> dict[str, str]:
        out = subprocess.run([str(self.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                             check=True, capture_output=True, text=True).stdout
        return {item["name"].lower().replace("_", "-"): item["version"] for item in json.loads(out)}

    def can_import(self, module: str) -> bool:
        return subprocess.run([str(self.python), "-c", f"import {module}"], capture_output=True).returncode == 0

    def pip(self, *args: str) -> None:
        subprocess.run([str(self.python), "-m", "pip", *args, "--disable-pip-version-check", "-q"], check=True,
                       capture_output=True, text=True)

    def server(self, *args: str, auth: tuple[str, str] | None = None) -> "SdnextServer":
        return SdnextServer(self, list(args), auth)


class SdnextServer:
    """`launch.py` on 127.0.0.1:PORT for one site; a context manager that stops it on exit."""

    def __init__(self, site: SdnextSite, args: list[str], auth: tuple[str, str] | None = None) -> None:
        self.site = site
        self.args = args
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_file = site.data / "sdnext.log"
        self.console_file = site.root / f"console-{self.port}.txt"
        self.log_start = 0  # offset of this launch in the (appended) log file

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 900.0) -> "SdnextServer":
        self.start_process()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SD.Next exited with {self.process.returncode} while starting; "
                                   f"console: {self.console_file}\n{self.console_tail()}")
            if "Startup time:" in self.log() and self._answers():
                return self
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"SD.Next did not start within {timeout:.0f} s; console: {self.console_file}\n"
                           f"{self.console_tail()}")

    def start_process(self) -> None:
        self.site.data.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        command = [str(self.site.python), "launch.py", "--experimental", "--debug", "--insecure",
                   "--server-name", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.site.data),
                   "--log", str(self.log_file), *self.args]
        if self.auth:
            command += ["--auth", f"{self.auth[0]}:{self.auth[1]}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
               "COLUMNS": "250", "SDNQ_USE_TORCH_COMPILE": "0", "SD_INSTALL_DEBUG": "1"}
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # the project venv's, not SD.Next's
            env.pop(name, None)
        self.console = self.console_file.open("ab")
        self.process = subprocess.Popen(command, cwd=self.site.app, env=env, stdout=self.console,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def run_to_exit(self, timeout: float) -> None:
        self.start_process()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"SD.Next --test did not finish within {timeout:.0f} s; console: {self.console_file}")
        self.process = None
        self.console.close()
        if code != 0:
            raise RuntimeError(f"SD.Next --test exited with {code}; console: {self.console_file}\n{self.console_tail()}")

    def _answers(self) -> bool:
        try:
            status, _ = self.request("GET", "/sdapi/v1/progress", auth=self.auth, timeout=5)
        except OSError:
            return False
        return status == 200

    def stop(self, timeout: float = 60.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        self.console.close()

    def __enter__(self) -> "SdnextServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- logs -----------------------------------------------------------------------
    def log(self) -> str:
        """This launch's part of SD.Next's log file."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(self.log_start)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def console_tail(self, size: int = 6000) -> str:
        try:
            return self.console_file.read_bytes()[-size:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 120.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log[start:]:
                return log
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not in SD.Next's log within {timeout:.0f} s; log tail:\n{self.log()[-4000:]}")

    # ---- HTTP -----------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, auth: tuple[str, str] | None | bool = True,
                timeout: float = 60.0, raw: bool = False) -> tuple[int, Any]:
        """(status, parsed JSON or bytes); `auth=True` = this server's credentials, if any."""
        credentials = self.auth if auth is True else (auth or None)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if credentials:
            token = b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        if raw:
            return status, payload
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload

    def set_options(self, **values: Any) -> None:
        """Change settings through SD.Next's own options API (`opts.set` + save, onchange hooks run)."""
        status, body = self.request("POST", "/sdapi/v1/options", values)
        assert status == 200, (status, body)

    def options(self) -> dict[str, Any]:
        status, body = self.request("GET", "/sdapi/v1/options")
        assert status == 200, (status, body)
        return body


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Start the real SD.Next with this checkout installed")
    parser.add_argument("--theme", default="Standard", choices=["Standard", "Modern"])
    parser.add_argument("--recipe", default="", help="framepack_model_recipe setting, e.g. 'folder: /path/to/tiny'")
    parser.add_argument("--root", type=Path, default=None, help="site folder (default: a new temporary one)")
    parser.add_argument("--refresh", action="store_true", help="install the checkout's current files again")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="sdnext-site-"))
    site = SdnextSite(root)
    if args.refresh and site.extension.exists():
        shutil.rmtree(site.extension)
        site.install_extension()
    if not site.extension.exists():
        site.install_extension()
        site.update_config(theme_type=args.theme, sd_checkpoint_autoload=False)
        print("full launch (SD.Next runs install.py) ...", flush=True)
        site.full_launch()
    site.update_config(theme_type=args.theme, sd_checkpoint_autoload=False,
                       **({"framepack_model_recipe": args.recipe} if args.recipe else {}))
    with site.server() as server:
        print(f"SD.Next at {server.url} (site {root}); Ctrl-C stops", flush=True)
        try:
            while server.process and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
