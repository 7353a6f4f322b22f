"""Drives a running headless Chromium over the DevTools protocol the way a
person reads a message: opens the copy, follows a tracked link, then comes
back and unsubscribes by clicking on the page. Standard library only (a
small WebSocket client is below).

    python3 cdp.py WS_URL COPY_URL LANDING_PREFIX

WS_URL is the browser's DevTools endpoint (`ws://127.0.0.1:PORT/devtools/
browser/ID`, from DevToolsActivePort), COPY_URL the message's HTML served
over loopback, LANDING_PREFIX what the followed link's page URL starts
with. Steps, each with a bounded wait:

1. open COPY_URL and wait for its load event (the pixel is an image of
   the page: the load event waits for it);
2. click the first tracked link (`a[href*="/c/"]`) with a DOM click and
   wait until the tab shows LANDING_PREFIX, loaded;
3. open COPY_URL again, click the unsubscribe link (`a[href*="/u/"]`),
   wait for its page, click the `#stream` button and wait for the answer
   page (title "Unsubscribed").

Prints one JSON object on stdout (the URLs reached, the result page's
text, every network request with its status and redirect); exits 1 with
the browser's console, exceptions and network log on stderr when a step
fails.
"""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

STEP_TIMEOUT = 60.0


class WebSocket:
    """Just enough of RFC 6455 for DevTools: text frames, client masking,
    fragmented and long messages, ping/pong, close."""

    def __init__(self, url, timeout):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"DevTools refused the WebSocket: {head.decode(errors='replace')}")

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data

    def _frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text):
        self._frame(0x1, text.encode())

    def recv(self, timeout):
        """The next text message, or None when nothing came within timeout."""
        self.sock.settimeout(max(timeout, 0.01))
        message = b""
        while True:
            try:
                first = self._exact(2)
            except socket.timeout:
                if message:
                    raise
                return None
            self.sock.settimeout(STEP_TIMEOUT)
            fin, opcode = first[0] & 0x80, first[0] & 0x0F
            n = first[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if first[1] & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if fin:
                    return message.decode()

    def close(self):
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Failed(Exception):
    pass


class Browser:
    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url, STEP_TIMEOUT)
        self.next_id = 0
        self.session = None
        self.console = []
        self.network = {}
        self.order = []

    def call(self, method, params=None, session=True):
        self.next_id += 1
        mine = self.next_id
        message = {"id": mine, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"no answer to {method} within {STEP_TIMEOUT} s")
            reply = self.pump(left)
            if reply and reply.get("id") == mine:
                if "error" in reply:
                    raise Failed(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def pump(self, timeout):
        """Reads one message; notes events; returns it (None on timeout)."""
        text = self.ws.recv(timeout)
        if text is None:
            return None
        message = json.loads(text)
        self.note(message.get("method"), message.get("params", {}))
        return message

    def note(self, method, params):
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            self.console.append(f"exception: {json.dumps(params.get('exceptionDetails', {}))}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            # A redirect keeps the request's id: each hop gets an entry.
            rid = params["requestId"]
            hop = self.last_hop(rid)
            redirect = params.get("redirectResponse")
            if redirect and hop:
                hop["status"] = redirect.get("status")
                hop["location"] = params["request"]["url"]
            key = f"{rid}+{len(self.order)}"
            self.network[key] = {"method": params["request"]["method"], "url": params["request"]["url"]}
            self.order.append(key)
        elif method == "Network.responseReceived":
            hop = self.last_hop(params["requestId"])
            if hop:
                hop["status"] = params["response"].get("status")
        elif method == "Network.loadingFailed":
            hop = self.last_hop(params["requestId"])
            if hop:
                hop["failed"] = params.get("errorText")

    def last_hop(self, rid):
        hops = [r for r in self.order if r.startswith(rid + "+")]
        return self.network[hops[-1]] if hops else None

    def requests(self):
        return [self.network[r] for r in self.order]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise Failed(f"{expression}: {json.dumps(result['exceptionDetails'])}")
        return result.get("result", {}).get("value")

    def until(self, what, expression):
        """Evaluates expression until it is truthy, reading events between
        tries; its value. A navigation under way may make an evaluation
        fail (the context it ran in is gone): that is a try, not a failure."""
        deadline = time.monotonic() + STEP_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
                last = value
            except Failed as e:
                last = str(e)
            self.pump(0.05)
        raise Failed(f"{what}: not within {STEP_TIMEOUT} s (last: {last!r})")

    def open(self, url):
        self.evaluate("window.__posthorn_old_page = true")
        self.call("Page.navigate", {"url": url})
        self.until(f"load {url}", f"!window.__posthorn_old_page && location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def click(self, what, selector, then):
        """A DOM click on selector, then waits for a new, loaded page for
        which `then` (a JS expression) holds; the page's URL."""
        self.evaluate("window.__posthorn_old_page = true")
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()"
        )
        if not found:
            raise Failed(f"{what}: no {selector} on {self.evaluate('location.href')}")
        return self.until(
            what,
            f"!window.__posthorn_old_page && document.readyState === 'complete' && ({then}) && location.href",
        )


def main():
    ws_url, copy_url, landing = sys.argv[1:4]
    browser = Browser(ws_url)
    report = {}
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = browser.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False)
        browser.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            browser.call(f"{domain}.enable")
        browser.until("about:blank", "document.readyState === 'complete'")

        # 1. The message, with its pixel.
        browser.open(copy_url)
        report["pixel_loaded"] = browser.evaluate(
            "Array.from(document.images).filter(i => i.src.includes('/o/')).map(i => i.complete && i.naturalWidth === 1)"
        )
        # 2. A tracked link, through the tracker's redirect to the landing page.
        report["link"] = browser.evaluate("document.querySelector('a[href*=\"/c/\"]').href")
        report["landed"] = browser.click(
            "follow the tracked link", 'a[href*="/c/"]', f"location.href.startsWith({json.dumps(landing)})"
        )
        report["landing_text"] = browser.evaluate("document.body.innerText")
        # 3. Back to the message; its unsubscribe link; the page's button.
        browser.open(copy_url)
        report["unsubscribe_link"] = browser.evaluate("document.querySelector('a[href*=\"/u/\"]').href")
        report["unsubscribe_page"] = browser.click(
            "open the unsubscribe page", 'a[href*="/u/"]', "document.querySelector('#stream') !== null"
        )
        report["unsubscribe_page_text"] = browser.evaluate("document.body.innerText")
        report["unsubscribed_page"] = browser.click(
            "press #stream", "#stream", "document.title === 'Unsubscribed'"
        )
        report["unsubscribed_text"] = browser.evaluate("document.body.innerText")
        # Let the last events arrive, then note what went over the network.
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            browser.pump(0.05)
        report["requests"] = browser.requests()
        report["console"] = browser.console
    except (Failed, OSError, KeyError, TypeError) as e:
        print(f"cdp.py: {type(e).__name__}: {e}", file=sys.stderr)
        print("done so far: " + json.dumps(report, indent=1), file=sys.stderr)
        print("console and errors:\n  " + "\n  ".join(browser.console), file=sys.stderr)
        print("network:\n  " + "\n  ".join(json.dumps(r) for r in browser.requests()), file=sys.stderr)
        sys.exit(1)
    try:
        browser.call("Browser.close", session=False)
    except (Failed, OSError):
        pass  # it closes as it answers; the test kills it anyway
    browser.ws.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
