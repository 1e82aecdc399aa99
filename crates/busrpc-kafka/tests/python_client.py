"""Calls a busrpc service over Kafka knowing only docs/PROTOCOL.md.

usage: python_client.py BOOTSTRAP SERVICE [KID:HEX-SECRET]
  -> prints the JSON-RPC response. With a key, the request is signed and
     the reply's signature checked, as docs/PROTOCOL.md's "Signed messages"
     says (exit 1 if it is wrong).
"""
import hashlib
import hmac
import json
import struct
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, service = sys.argv[1], sys.argv[2]
key = None
if len(sys.argv) > 3:
    kid, hex_secret = sys.argv[3].split(":")
    key = (kid, bytes.fromhex(hex_secret))


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def signature(kid: str, secret: bytes, address: str, headers: dict, payload: bytes) -> str:
    signed = sorted((n.encode(), v.encode()) for n, v in headers.items()
                    if not n.startswith("busrpc-"))
    data = b"busrpc-sig:v1" + _field(kid.encode()) + _field(address.encode())
    data += struct.pack(">I", len(signed))
    for name, value in signed:
        data += _field(name) + _field(value)
    data += _field(payload)
    return f"v1;kid={kid};mac=" + hmac.new(secret, data, hashlib.sha256).hexdigest()


# The vector of docs/PROTOCOL.md.
assert signature("k1", b"0123456789abcdef0123456789abcdef", "busrpc.calc",
                 {"reply-to": "busrpc.inbox.1"}, b'{"jsonrpc":"2.0","method":"ping","id":1}') == (
    "v1;kid=k1;mac=3b601e2520f74b5ec01d39f70223c526cdd20f4100585dfe2fcc40c48db3c5a2")
inbox = f"busrpc.inbox.python-{uuid.uuid4().hex}"

# 1. An inbox topic of our own, one partition, read from its beginning.
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(name=inbox, num_partitions=1, replication_factor=1)])
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=30000)
consumer.assign([TopicPartition(inbox, 0)])
consumer.seek_to_beginning()

# 2. The request, to topic busrpc.<service>, with the inbox in `reply-to`.
request = {"jsonrpc": "2.0", "method": "echo", "params": ["from python"], "id": 1}
payload = json.dumps(request).encode()
headers = {"reply-to": inbox}
if key:
    # Without a deadline, when it was signed (or the server rejects it as
    # stale: a copy could otherwise be replayed for ever).
    headers["signed-at"] = str(int(time.time() * 1000))
    headers["busrpc-sig"] = signature(*key, f"busrpc.{service}", headers, payload)
producer = KafkaProducer(bootstrap_servers=bootstrap)
producer.send(f"busrpc.{service}", payload, headers=[(n, v.encode()) for n, v in headers.items()])
producer.flush()

# 3. The answer is the next record in the inbox; signed for the inbox.
for record in consumer:
    if key:
        got = {n: v.decode() for n, v in record.headers}
        expected = signature(*key, inbox, got, record.value)
        if not hmac.compare_digest(got.get("busrpc-sig", ""), expected):
            sys.exit(f"the reply's signature is wrong: {got.get('busrpc-sig')!r}")
    print(record.value.decode())
    break
else:
    sys.exit("no reply within 30 s")
consumer.close()
admin.delete_topics([inbox])
