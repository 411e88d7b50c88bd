"""Open every built chapter in headless Chromium: math typeset from the local MathJax, nothing clipped or leaked."""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parent.parent / "_build" / "html"
WIDTH, HEIGHT = 1280, 900  # a laptop window
CHECK_JS = (Path(__file__).with_name("browser_checks.js")).read_text()


def chromium_binary():
    """The Chromium to drive: $CHROMIUM, else chromium / chromium-browser / google-chrome on the PATH."""
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


class Browser:
    """Headless Chromium over the DevTools protocol on a pipe (fds 3 and 4): no driver, no network."""

    def __init__(self, binary, profile):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # child ends moved above 10, then dup'ed to 3 and 4 in the child
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no page may reach the network
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4, *high), preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for fd in high:
            os.close(fd)
        self._buf, self._id, self.session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def _read(self):
        while b"\0" not in self._buf:
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, _wait_event=None, **params):
        """Send one command and return its result (and, with _wait_event, wait for that event after it)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        result, seen = None, _wait_event is None
        while result is None or not seen:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result = reply["result"]
            elif reply.get("method") == _wait_event:
                seen = True
        return result

    def check(self, url):
        """Load a page, wait for MathJax, return the findings of browser_checks.js."""
        self.call("Page.navigate", "Page.loadEventFired", url=url)
        out = self.call("Runtime.evaluate", expression=CHECK_JS, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{url}: {out['exceptionDetails']}")
        return out["result"]["value"]

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)


def toc_pages():
    """The built page of every file in _toc.yml (stale pages of removed chapters are not read)."""
    import yaml

    toc = yaml.safe_load((HTML.parent.parent / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in [toc] + toc.get("parts", []) for c in part.get("chapters", [])]
    return [HTML / f"{f}.html" for f in files]


PAGES = toc_pages()


@pytest.fixture(scope="module")
def findings():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser or google-chrome): apt-get install chromium")
    missing = [str(p) for p in PAGES if not p.exists()]
    if missing:
        pytest.fail(f"pages missing, run `make book` first: {missing}")
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(binary, profile)
        try:
            return {p.stem: browser.check(p.as_uri()) for p in PAGES}
        finally:
            browser.close()


def problems(findings, key):
    return {page: f[key] for page, f in findings.items() if f[key]}


def test_mathjax_is_the_local_copy(findings):
    for page, f in findings.items():
        if not f["math"]:
            continue
        assert f["mathjax_src"], f"{page}: no MathJax script"
        assert all(src.startswith("file://") for src in f["mathjax_src"]), (page, f["mathjax_src"])
        assert f["mathjax_version"], f"{page}: MathJax did not start"


def test_every_formula_is_typeset(findings):
    assert sum(f["math"] for f in findings.values()) > 50  # the book has formulas at all
    assert not problems(findings, "untypeset")
    assert not problems(findings, "tex_errors")
    assert not problems(findings, "raw_tex")


def test_no_warning_progress_bar_or_temporary_path(findings):
    assert not problems(findings, "warnings")
    assert not problems(findings, "progress_bars")
    assert not problems(findings, "temp_paths")


def test_nothing_clipped(findings):
    assert not problems(findings, "wide_code")
    assert not problems(findings, "wide_math")
    assert not problems(findings, "wide_tables")


def test_tables_readable(findings):
    """Every table cell in full (wrapped, never cut to "..."), every header a name a reader can use,
    every number rounded for reading."""
    assert not problems(findings, "truncated_cells")
    assert not problems(findings, "raw_headers")
    assert not problems(findings, "unrounded_cells")


def test_figures_numbered_and_loaded(findings):
    assert not problems(findings, "uncaptioned_images")
    assert not problems(findings, "broken_images")
    assert not problems(findings, "nan_cells")


def test_answer_box_opens_and_closes_the_book(findings):
    """One answer box, the same text, opens chapter 1 (before its first section) and closes the
    discussion (in its last section), with a row per variant; chapter 8 computes it."""
    boxes = {page: f["answer_boxes"] for page, f in findings.items() if f["answer_boxes"]}
    assert set(boxes) == {"01_introduction", "08_results", "10_discussion"}, set(boxes)
    assert all(len(b) == 1 for b in boxes.values()), boxes
    texts = {b[0]["text"] for b in boxes.values()}
    assert len(texts) == 1, "the pasted boxes differ from the one chapter 8 glued"
    (text,) = texts
    assert "H200" in text and "stand-in" in text and "\u00d7" in text and "95% interval" in text
    first, last = boxes["01_introduction"][0], boxes["10_discussion"][0]
    assert first["height"] <= HEIGHT, "the box is taller than one screen"
    # the verdict opens chapter 1, whole, above the fold; the discussion repeats it
    (bottom,) = findings["01_introduction"]["verdict_bottom"]
    assert bottom <= HEIGHT, f"the verdict ends {bottom:.0f} px down, below a {HEIGHT} px window"
    assert len(findings["10_discussion"]["verdict_bottom"]) == 1
    assert first["rows"] >= 2 and first["sections_before"] == 0
    assert last["sections_before"] == last["sections"]
