# SPDX-License-Identifier: MIT
"""Long-lived handlers for ``fabric-shm-worker --handler`` (standard library only).

A handler is a program the worker starts once and streams objects to over stdin/stdout with
the framing of docs/handlers.md. With this module it is a few lines::

    from fabric_shm.handler import run

    def handle(request):
        return request.data.upper()        # bytes: the result

    run(handle)

``handle`` gets a :class:`Request` and returns the result bytes (or str, encoded as UTF-8).
Raising :class:`PermanentError` sends the object to the dead-letter topic at once; any other
exception is a retryable failure (the worker retries with backoff, up to --max-attempts).

Replies are written in batches: every request that arrived in one read is handled, then all
their replies go out in one write, so one pipe wake-up carries many objects.

``python3 -m fabric_shm.handler --lines CMD`` adapts a line-oriented tool (one line in, one
line out, e.g. ``tr a-z A-Z`` or ``sed -u s/a/b/``): CMD runs once, each object is written to
it as one line and the next line it prints is the result.
"""

import os
import struct
import sys

__all__ = ["Request", "PermanentError", "RetryableError", "run", "serve", "VERSION"]

VERSION = 1
MAGIC = b"FSHM"
_HELLO, _HELLO_REPLY, _REQUEST, _REPLY = ord("H"), ord("h"), ord("Q"), ord("R")
OK, RETRYABLE, PERMANENT = 0, 1, 2
_REQ_FIXED = struct.Struct("<QIIQQ")  # id, attempt, partition, offset, version


class PermanentError(Exception):
    """The input itself is bad: dead-letter it without retrying."""


class RetryableError(Exception):
    """A transient failure: retry after the worker's backoff (any other exception means the same)."""


class ProtocolError(Exception):
    """The worker sent something this helper does not understand."""


class Request:
    """One object to process. ``data`` is the object's bytes (a memoryview-free ``bytes``)."""

    __slots__ = ("id", "attempt", "partition", "offset", "version", "uri", "key", "topic", "data")

    def __init__(self, id, attempt, partition, offset, version, uri, key, topic, data):
        self.id = id
        self.attempt = attempt
        self.partition = partition
        self.offset = offset
        self.version = version
        self.uri = uri
        self.key = key
        self.topic = topic
        self.data = data

    @property
    def bucket(self):
        return self.uri.split("/", 4)[3] if self.uri.startswith("fabric://") else ""

    def __repr__(self):
        return "Request(id=%d, uri=%r, version=%d, attempt=%d, %d bytes)" % (
            self.id, self.uri, self.version, self.attempt, len(self.data))


# A frame's length counts its type byte and fields; the worker refuses a frame above 1 GiB.
_MAX_REPLY_BODY = (1 << 30) - (1 + 8 + 1 + 4)


def _reply(req_id, status, body):
    if len(body) > _MAX_REPLY_BODY:
        # Too large to frame: this request alone fails (an error raised here would end the
        # helper, and every request in flight with it).
        body = ("handler result of %d bytes exceeds the protocol's %d" % (len(body), _MAX_REPLY_BODY)).encode()
        status = PERMANENT
    return struct.pack("<IBQBI", 1 + 8 + 1 + 4 + len(body), _REPLY, req_id, status, len(body)) + body


def _hello_reply():
    return struct.pack("<IB4sHH", 1 + 4 + 2 + 2, _HELLO_REPLY, MAGIC, VERSION, 0)


def _parse_request(body):
    rid, attempt, partition, offset, version = _REQ_FIXED.unpack_from(body, 0)
    pos = _REQ_FIXED.size
    fields = []
    for _ in range(3):
        (n,) = struct.unpack_from("<H", body, pos)
        pos += 2
        fields.append(bytes(body[pos:pos + n]).decode("utf-8", "replace"))
        pos += n
    (n,) = struct.unpack_from("<I", body, pos)
    pos += 4
    data = bytes(body[pos:pos + n])
    if pos + n != len(body):
        raise ProtocolError("request %d: %d data bytes announced, %d present" % (rid, n, len(body) - pos))
    return Request(rid, attempt, partition, offset, version, fields[0], fields[1], fields[2], data)


def _answer(handle, req):
    try:
        out = handle(req)
    except PermanentError as e:
        return _reply(req.id, PERMANENT, str(e).encode("utf-8", "replace"))
    except Exception as e:  # retryable: the worker counts the attempt and backs off
        return _reply(req.id, RETRYABLE, ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace"))
    if out is not None and not isinstance(out, (str, bytes, bytearray, memoryview)):
        return _reply(req.id, PERMANENT,
                      ("handler returned %s, not bytes or str" % type(out).__name__).encode())
    try:
        body = b"" if out is None else out.encode("utf-8") if isinstance(out, str) else bytes(out)
    except (UnicodeEncodeError, ValueError) as e:
        # A str with a lone surrogate, a released memoryview: a bad result of this request
        # alone. Raised from here it would end the helper, and every request in flight (the
        # ones answered in this batch too) would fail with it.
        return _reply(req.id, PERMANENT,
                      ("handler result: %s: %s" % (type(e).__name__, e)).encode("utf-8", "replace"))
    return _reply(req.id, OK, body)


def serve(handle, infd=0, outfd=1):
    """Serves requests from ``infd`` until it closes (the worker drains, then closes it)."""
    buf = bytearray()
    greeted = False
    while True:
        chunk = os.read(infd, 1 << 20)
        if not chunk:
            return
        buf += chunk
        out = []
        pos = 0
        while len(buf) - pos >= 5:
            (length,) = struct.unpack_from("<I", buf, pos)
            if length == 0:
                raise ProtocolError("empty frame")
            if len(buf) - pos - 4 < length:
                break
            ftype = buf[pos + 4]
            body = memoryview(buf)[pos + 5:pos + 4 + length]
            if ftype == _HELLO:
                if bytes(body[:4]) != MAGIC:
                    raise ProtocolError("hello without the FSHM magic")
                (version,) = struct.unpack_from("<H", body, 4)
                if version != VERSION:
                    raise ProtocolError("the worker speaks version %d, this helper %d" % (version, VERSION))
                out.append(_hello_reply())
                greeted = True
            elif ftype == _REQUEST:
                if not greeted:
                    raise ProtocolError("a request before the hello")
                out.append(_answer(handle, _parse_request(body)))
            else:
                raise ProtocolError("unknown frame type %r" % chr(ftype))
            body.release()
            pos += 4 + length
        del buf[:pos]
        if out:
            data = b"".join(out)
            view = memoryview(data)
            while view:
                n = os.write(outfd, view)
                view = view[n:]


def run(handle):
    """Runs ``handle`` as this process's handler: stdin/stdout carry the protocol. Anything the
    handler prints must go to stderr (stdout is the protocol); ``print`` is redirected there."""
    infd, outfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # a stray print() goes to stderr instead of corrupting the protocol
    sys.stdout = sys.stderr
    try:
        serve(handle, infd, outfd)
    except ProtocolError as e:
        sys.stderr.write("fabric_shm.handler: protocol error: %s\n" % e)
        sys.exit(3)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


def _lines_handler(argv):
    """A handler around a line-oriented tool: one line in, one line out per object."""
    import subprocess

    tool = subprocess.Popen(argv if len(argv) > 1 else ["/bin/sh", "-c", argv[0]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    tool_out = tool.stdout

    def handle(req):
        newline = req.data.endswith(b"\n")
        line = req.data if newline else req.data + b"\n"
        if b"\n" in line[:-1]:
            raise PermanentError("object has more than one line; --lines passes one line per object")
        tool.stdin.write(line)
        result = tool_out.readline()
        if not result:
            raise RetryableError("the line tool exited (status %s)" % tool.poll())
        return result if newline or not result.endswith(b"\n") else result[:-1]

    run(handle)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--lines":
        _lines_handler(sys.argv[2:])
    else:
        sys.stderr.write("usage: python3 -m fabric_shm.handler --lines CMD [ARG...]\n"
                         "  (to write a handler in Python: from fabric_shm.handler import run)\n")
        sys.exit(2)
