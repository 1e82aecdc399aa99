"""Writes records into a busrpc request topic that no Kafka client library
would write: a header name that is not UTF-8, a record without a value, a
header value that is not UTF-8, a header given twice. kafka-python encodes each header name with
`.encode("utf-8")`; a str whose encode gives other bytes gets them onto the
wire as they are.

usage: hostile_records.py BOOTSTRAP TOPIC REPLY_TO
"""
import json
import sys

from kafka import KafkaProducer


class RawName(str):
    """A header name sent as the bytes given, not as UTF-8."""

    def __new__(cls, raw):
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, *args, **kwargs):
        return self.raw


bootstrap, topic, reply_to = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def call(n):
    return json.dumps({"jsonrpc": "2.0", "method": "echo", "params": [str(n)], "id": n}).encode()


# A fixed protocol version: the probe kafka-python otherwise makes does not
# agree with librdkafka's mock cluster.
producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 0, 0))
records = [
    # A header name that is not UTF-8, before the reply-to.
    (None, call(1), [(RawName(b"\xff\xfe"), b"x"), ("reply-to", reply_to)]),
    # No value: the request is missing (kafka-python wants a key then).
    (b"k", None, [("reply-to", reply_to)]),
    # A header value that is not UTF-8: the content type.
    (None, call(3), [("content-type", b"application/json\xff"), ("reply-to", reply_to)]),
    # Two reply-to headers: the last one counts.
    (None, call(4), [("reply-to", b"nowhere"), ("reply-to", reply_to)]),
]
for key, value, headers in records:
    producer.send(topic, value, key=key, headers=headers)
    producer.flush()
producer.close()
