"""Drives one keep-alive connection for bench/icount.sh: a warm-up, then
zeroes callgrind's counters, sends N requests one after another, and dumps
them. Reads Content-Length and chunked answers (streams)."""
import socket
import subprocess
import sys


def main():
    port, n, key, body, pid = (int(sys.argv[1]), int(sys.argv[2]),
                               sys.argv[3], sys.argv[4].encode(), sys.argv[5])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            % len(body))
    if key:
        head += b"Authorization: Bearer " + key.encode() + b"\r\n"
    req = head + b"\r\n" + body
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""

    def fill():
        nonlocal buf
        data = s.recv(65536)
        if not data:
            raise SystemExit("icount: the gateway closed the connection")
        buf += data

    def one():
        nonlocal buf
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            fill()
        h, _, buf = buf.partition(b"\r\n\r\n")
        lines = h.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            fields[k.strip().lower()] = v.strip()
        if fields.get(b"transfer-encoding") == b"chunked":
            while True:
                while b"\r\n" not in buf:
                    fill()
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    fill()
                buf = buf[size + 2:]
                if size == 0:
                    break
        else:
            cl = int(fields.get(b"content-length", b"0"))
            while len(buf) < cl:
                fill()
            buf = buf[cl:]
        return status

    for _ in range(200):
        status = one()
    if status != 200:
        raise SystemExit("icount: the warm-up answered %d" % status)
    subprocess.run(["callgrind_control", "-z", pid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bad = 0
    for _ in range(n):
        bad += one() != 200
    subprocess.run(["callgrind_control", "-d", pid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if bad:
        raise SystemExit("icount: %d answers were not 200" % bad)


main()
