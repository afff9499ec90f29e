"""A real JupyterLab for the widget tests (test_widget_lab.py, test_widget_tuning.py).

`Lab` starts `jupyter lab` on 127.0.0.1 with a random token and its own config, data and runtime
folders (the kernel is the venv's own python); the `jupyter_lab` fixture of conftest.py starts
one per test and stops it, with its kernels, afterwards. `notebook_page` opens a notebook of it
in a Playwright browser (tests/chromium.py) and runs all its cells from the Run menu, as a reader
would; on failure it saves a screenshot under `_build/screenshots/` and fails with the page's
JavaScript errors and the tail of the server's log (which holds the kernel's stderr too).
`wait_for` polls `PAGE_STATE`: the notebook's outputs and the widget person's panel
(`course_lib.widgets.WidgetHuman`, class ``course-lib-human``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
SERVER_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError as err:
        return f"(no server log: {err})"


class Lab:
    """A `jupyter lab` server on 127.0.0.1 serving ``root``, with its own Jupyter folders."""

    def __init__(self, root: Path, home: Path):
        self.root, self.token, self.port = root, secrets.token_hex(16), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "server.log"
        config, settings = home / "config", home / "config" / "lab" / "user-settings"
        for plugin, values in {
            # no news or update checks (offline), no toast in front of the notebook
            "@jupyterlab/apputils-extension/notification": {
                "checkForUpdates": False,
                "fetchNews": "false",
            },
            # every cell in the DOM, so its outputs can be read wherever the page is scrolled
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        }.items():
            target = settings / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values), encoding="utf-8")
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
        }
        env.pop("MPLBACKEND", None)  # the kernel draws inline, as for a reader (conftest sets Agg)
        self.command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={home / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            self.command.append("--allow-root")
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}")
            try:
                with self.request("/api/status", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {SERVER_TIMEOUT_S} s")

    def request(self, path: str, method: str = "GET", timeout: float = 10):
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        return urllib.request.urlopen(req, timeout=timeout)

    def children(self) -> list:
        """The server's child processes (its kernels), to make sure they end with it."""
        try:
            import psutil

            return psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:
            return []

    def stop(self) -> None:
        if self.proc is None:
            return
        kernels = self.children()
        if self.proc.poll() is None:
            try:  # the server shuts its kernels down, then itself
                self.request("/api/shutdown", method="POST", timeout=10).close()
                self.proc.wait(timeout=30)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        for child in kernels:  # started by this server, for this test
            try:
                if child.is_running():
                    child.kill()
            except Exception:
                pass


# --- the browser --------------------------------------------------------------------------------

# The page as the tests see it. ``panel`` is the widget person's panel: its HTML texts (progress,
# status, the tuning lab's table), its dropdowns, its sliders (label, readout, disabled), the src
# of its image and the rows of its table.
PAGE_STATE = r"""() => {
  const text = (sel) => Array.from(document.querySelectorAll(sel)).map(e => e.textContent);
  const panel = document.querySelector('.course-lib-human');
  const all = (sel) => panel ? Array.from(panel.querySelectorAll(sel)) : [];
  return {
    selects: all('select').length,
    panel: panel ? all('.widget-html').map(e => e.textContent.trim()).join(' | ') : null,
    sliders: all('.widget-slider').map(s => ({
      name: (s.querySelector('.widget-label') || {}).textContent || '',
      value: (s.querySelector('.widget-readout') || {}).textContent || '',
      disabled: !!s.querySelector('.noUi-target[disabled]'),
    })),
    image: (all('img')[0] || {}).src || null,
    rows: all('table tr').map(tr => Array.from(tr.querySelectorAll('td')).map(c => c.textContent))
      .filter(cells => cells.length),
    head: all('table th').map(c => c.textContent),
    started: Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
      .some(e => /\[(\*|\d+)\]/.test(e.textContent)),
    outputs: text('.jp-OutputArea-output'),
    errors: text('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
      .filter(t => /Error|Traceback/.test(t)),
    statusbar: (document.querySelector('#jp-main-statusbar') || {}).textContent || '',
    dialog: (document.querySelector('.jp-Dialog') || {}).textContent || null,
  };
}"""


def wait_for(page, done, timeout_s: float, what: str) -> dict:
    """Poll the page's state until ``done(state)``; stop early on an error output.

    A "Select Kernel" dialog (JupyterLab asks when a cell is run before the notebook's session
    has its kernel) is answered as a reader would: the preselected Python 3 kernel.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(PAGE_STATE)
        if state["dialog"] and "Select Kernel" in state["dialog"]:
            page.locator(".jp-Dialog .jp-mod-accept").click()
            continue
        if state["errors"]:
            raise AssertionError(f"a cell failed while waiting for {what}:\n" + state["errors"][0])
        if done(state):
            return state
        if time.monotonic() > deadline:
            outputs = "\n".join(state["outputs"])[-3000:]
            raise TimeoutError(
                f"no {what} within {timeout_s} s (status bar: {state['statusbar']!r}, panel: "
                f"{state['panel']!r})\noutputs so far:\n{outputs}"
            )
        page.wait_for_timeout(500)


def run_all_cells(page) -> None:
    """Run → Run All Cells, from the menu bar, as a reader would."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu-item:visible", has=page.locator(".lm-Menu-itemLabel")).filter(
        has_text=re.compile(r"^Run All Cells")
    )
    item.first.click()


# the server's own kernel (the venv's python), named in the notebooks the tests write
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


@contextlib.contextmanager
def notebook_page(browser, lab: Lab, name: str, screenshot: str):
    """A page of ``browser`` with ``lab``'s notebook ``name`` open and all its cells started.

    Any failure in the block (or here) fails the test with the page's JavaScript errors and the
    tail of the server's log, after a screenshot ``_build/screenshots/<screenshot>``.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}", wait_until="load")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
        wait_for(page, lambda s: "| Idle" in s["statusbar"], 120, "idle kernel")
        run_all_cells(page)
        try:
            wait_for(page, lambda s: s["started"], 30, "first cell to start")
        except TimeoutError:  # e.g. a Select Kernel dialog came first and swallowed the command
            run_all_cells(page)
        yield page
    except Exception as err:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / screenshot), full_page=True)
        js = "\n".join(page_errors[-5:]) or "(none)"
        message = (
            f"{type(err).__name__}: {err}\n--- JavaScript errors ---\n{js}\n"
            f"--- jupyter lab log (tail) ---\n{log_tail(lab.log)}\n"
            f"(screenshot: {SCREENSHOTS / screenshot})"
        )
        raise pytest.fail.Exception(message, pytrace=False) from None
    finally:
        context.close()
