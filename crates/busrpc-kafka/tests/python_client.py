"""Calls a busrpc service over Kafka knowing only docs/PROTOCOL.md.

usage: python_client.py BOOTSTRAP SERVICE  -> prints the JSON-RPC response
"""
import json
import sys
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, service = sys.argv[1], sys.argv[2]
inbox = f"busrpc.inbox.python-{uuid.uuid4().hex}"

# 1. An inbox topic of our own, one partition, read from its beginning.
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(name=inbox, num_partitions=1, replication_factor=1)])
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=30000)
consumer.assign([TopicPartition(inbox, 0)])
consumer.seek_to_beginning()

# 2. The request, to topic busrpc.<service>, with the inbox in `reply-to`.
request = {"jsonrpc": "2.0", "method": "echo", "params": ["from python"], "id": 1}
producer = KafkaProducer(bootstrap_servers=bootstrap)
producer.send(f"busrpc.{service}", json.dumps(request).encode(), headers=[("reply-to", inbox.encode())])
producer.flush()

# 3. The answer is the next record in the inbox.
for record in consumer:
    print(record.value.decode())
    break
else:
    sys.exit("no reply within 30 s")
consumer.close()
admin.delete_topics([inbox])
