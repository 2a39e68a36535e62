#!/usr/bin/env python3
"""moto's DynamoDB with its requests applied one at a time, and transactions
that check every condition before they write.

moto makes a transaction atomic by deep-copying every table it touches and
putting the copy back when a condition fails. Served by moto's threaded
server, two transactions can undo each other's writes, which DynamoDB never
does; and the copies cost time and, kept alive by exception tracebacks,
gigabytes of memory under a stream of conflicting writes. Here requests are
applied one at a time, and TransactWriteItems first evaluates every
condition and only then writes, which is atomic because nothing else runs in
between. Connections are served in threads and kept open between requests
(HTTP/1.1 keep-alive).

Usage: dynamodb_server.py HOST PORT
"""

import io
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def transact_write_items(self, transact_items):
    """All conditions first, then all writes; no table copies."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    targets = set()
    reasons = []
    operations = []
    for entry in transact_items:
        if len(entry) != 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(entry.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        target = (op["TableName"], str(dict(sorted(key.items()))))
        if target in targets:
            raise MultipleTransactionsException()
        targets.add(target)
        condition = op.get("ConditionExpression")
        reason = (None, None, None)
        if condition is not None:
            current = self.get_item(op["TableName"], key)
            check = get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            if not check.expr(current):
                item = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    item = current.to_json()["Attributes"]
                reason = ("ConditionalCheckFailed", "The conditional request failed", item)
        reasons.append(reason)
        operations.append((op_type, op, key))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for op_type, op, key in operations:
        names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        if op_type == "Put":
            self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                          expression_attribute_values=values)
        elif op_type == "Delete":
            self.delete_item(op["TableName"], key, expression_attribute_names=names,
                             expression_attribute_values=values)
        elif op_type == "Update":
            self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                             expression_attribute_names=names, expression_attribute_values=values)


DynamoDBBackend.transact_write_items = transact_write_items

_one_at_a_time = threading.Lock()
_moto = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    with _one_at_a_time:
        return list(_moto(environ, start_response))


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Serves each connection in its own thread and keeps it open between
    requests (HTTP/1.1), as DynamoDB does. werkzeug's development server
    closes every connection after one response, so every request would pay a
    TCP connect and accept. The whole request body is read before the
    application runs and every response carries its length, so the next
    request on the connection starts where this one ended."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write; without it, Nagle's algorithm and
    # the client's delayed ACK hold every response back by tens of ms.
    wbufsize = -1
    disable_nagle_algorithm = True
    # Longer than the clients' idle pool timeout (90 s), so a client never
    # reuses a connection that is being closed here.
    timeout = 300

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.serve
        raise AttributeError(name)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def environ(self, body):
        path, _, query = self.path.partition("?")
        environ = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": self.path,
            "RAW_URI": self.path,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue
            value = value.replace("\r\n", "")
            if key != "CONTENT_TYPE":
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def serve(self):
        body = self.read_body()
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        try:
            data = b"".join(app(self.environ(body), start_response))
            status, headers = started
        except Exception:
            traceback.print_exc()
            data, status, headers = b"internal error", "500 Internal Server Error", []
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("connection", "content-length", "transfer-encoding", "keep-alive"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    # The default listen backlog is 5; the services and tests open tens of
    # connections at once, and connections beyond the backlog wait for a
    # SYN retransmit (a second or more) or are refused.
    request_queue_size = 128
    daemon_threads = True


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    server = Server((host, port), KeepAliveHandler)
    server.serve_forever()
