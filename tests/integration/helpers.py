"""Small HTTP/1.1 tools for the integration tests.

The gateway's strictness is the thing under test, so requests are written as
raw bytes and responses are read by hand: http.client would normalise away
exactly the framing these tests look at. Only the standard library is used.
"""
import json
import socket
import time

TIMEOUT = 10.0


class Response:
    """One HTTP response: status, lowercased headers, raw body bytes."""

    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # name (lowercase) -> list of values
        self.body = body

    def header(self, name, default=None):
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def json(self):
        return json.loads(self.body)

    def error_code(self):
        return self.json()["error"]["code"]

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers,
                                          self.body[:300])


class Conn:
    """A client connection that keeps the raw bytes visible."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.sent = 0  # bytes written, for checking the access log
        self.received = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)
        self.sent += len(data)

    def request(self, method, path, body=None, headers=None, version="1.1"):
        self.send(build_request(method, path, body, headers, version))

    # -- reading -----------------------------------------------------------

    def _fill(self):
        """Reads more bytes; returns the arrival time, raises EOFError."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        now = time.monotonic()
        if not data:
            self.eof = True
            raise EOFError("connection closed by peer; have %r" %
                           self.buf[:200])
        self.buf += data
        self.received += len(data)
        return now

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        raw = self._until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")
        parts = lines[0].split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return version, status, reason, headers

    def read_chunk(self):
        """The next chunk of a chunked body; None after the last one."""
        size_line = self._until(b"\r\n").split(b";")[0].strip()
        size = int(size_line, 16)
        if size == 0:
            # Trailers, then the empty line.
            while self._until(b"\r\n") != b"":
                pass
            return None
        data = self._exactly(size)
        assert self._exactly(2) == b"\r\n", "chunk not followed by CRLF"
        return data

    def read_response(self, method="GET"):
        version, status, reason, headers = self.read_head()
        te = ",".join(headers.get("transfer-encoding", [])).lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in te:
            parts = []
            while True:
                c = self.read_chunk()
                if c is None:
                    break
                parts.append(c)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"][0]))
        else:
            body = self.read_to_eof()
        return Response(version, status, reason, headers, body)

    def read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def is_closed(self, timeout=5.0):
        """True when the peer closes (FIN or RST) with nothing more to
        read within timeout; False if more bytes come or it stays open."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            self.received += len(data)
            return False
        return True

    def events(self):
        """Yields (arrival_time, data) for each SSE event of a chunked
        event-stream body as its bytes arrive; the time is when the recv()
        that completed the event's chunk returned. Afterwards
        self.complete says whether the body ended with its last chunk
        (False: the connection closed first)."""
        self.complete = False
        pending = b""
        while True:
            try:
                size_line = self._until(b"\r\n")
            except EOFError:
                return
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                try:
                    while self._until(b"\r\n") != b"":
                        pass
                except EOFError:
                    return
                self.complete = True
                return
            t = time.monotonic()
            while len(self.buf) < size + 2:
                try:
                    t = self._fill()
                except EOFError:
                    return
            chunk, self.buf = self.buf[:size], self.buf[size + 2:]
            pending += chunk
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                data = [l[5:].lstrip() for l in event.split(b"\n")
                        if l.startswith(b"data:")]
                if data:
                    yield t, b"\n".join(data).decode()


def build_request(method, path, body=None, headers=None, version="1.1"):
    headers = dict(headers or {})
    data = b""
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        headers.setdefault("Content-Length", str(len(data)))
    if version == "1.1":
        headers.setdefault("Host", "localhost")
    head = "%s %s HTTP/%s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % kv for kv in headers.items())
    return head.encode() + b"\r\n" + data


def http(port, method, path, body=None, headers=None, timeout=TIMEOUT):
    """One request on a fresh connection; returns the Response."""
    with Conn(port, timeout=timeout) as c:
        c.request(method, path, body, headers)
        return c.read_response(method)


def chat_body(text, model="gpt-test", stream=None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream is not None:
        body["stream"] = stream
    body.update(extra)
    return body


def chat(port, text, model="gpt-test", stream=None, headers=None, **extra):
    return http(port, "POST", "/v1/chat/completions",
                chat_body(text, model, stream, **extra), headers)


def sse_data(body):
    """The data payloads of an event-stream body, in order."""
    out = []
    for event in body.decode().split("\n\n"):
        data = [l[5:].lstrip() for l in event.split("\n")
                if l.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def stream_text(events):
    """Concatenated delta content of chat.completion.chunk payloads."""
    text = ""
    for e in events:
        if e == "[DONE]":
            continue
        obj = json.loads(e)
        for ch in obj.get("choices") or []:
            text += (ch.get("delta") or {}).get("content") or ""
    return text


def wait_for(predicate, timeout=5.0, interval=0.02):
    """Polls predicate until it returns a truthy value or timeout passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
