#!/usr/bin/env python3
"""moto's server with its requests applied one at a time.

moto keeps DynamoDB in memory and makes a transaction atomic by copying the
table and putting the copy back when a condition fails. Two transactions
served at once by moto's threaded server can therefore undo each other's
writes, which real DynamoDB never does. Serialising the requests restores the
guarantee the ledger and intake rely on; connections are still served in
threads.

Usage: dynamodb_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_one_at_a_time = threading.Lock()
_moto = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    with _one_at_a_time:
        return list(_moto(environ, start_response))


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
