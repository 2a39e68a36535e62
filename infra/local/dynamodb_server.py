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
between. Connections are still served in threads.

Usage: dynamodb_server.py HOST PORT
"""

import sys
import threading

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple



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


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
