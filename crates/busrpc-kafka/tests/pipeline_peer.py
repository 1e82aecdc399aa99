"""A caller and a receiver of the original Python library's wire format
("pipeline"), written from its description in docs/PROTOCOL.md ("The
pipeline dialect"), with kafka-python and msgpack: what tests/pipeline.rs
puts busrpc against.

    pipeline_peer.py caller BOOTSTRAP SERVICE CALLS   # CALLS: JSON [[method, params], ...]
    pipeline_peer.py receiver BOOTSTRAP SERVICE

The caller makes each call from a thread of its own (as concurrent callers
do), and prints one JSON line per call: the reply's keys in their order, the
reply, and the id it sent. The receiver serves echo, add, fail and sleep
until it is killed, printing "ready" once it reads and one line per request.
"""

import json
import sys
import threading
import time

import msgpack
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

RESULTS = "method_results"


def results_reader(bootstrap):
    # As the original caller: group "default", from the earliest offset
    # when the group has none, by assign() on partition 0.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="default",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=60000,
    )
    partition = TopicPartition(RESULTS, 0)
    consumer.assign([partition])
    # Its position is taken before the call goes out, so that no other
    # caller's commit can move it past this call's reply.
    consumer.position(partition)
    return consumer


def call(bootstrap, service, method, params, call_id, out, lock):
    consumer = results_reader(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": call_id}
    producer.send(f"{service}_method_requests", value=msgpack.packb(request), partition=0)
    producer.flush()
    for record in consumer:
        if record.key != call_id.encode():
            continue
        consumer.commit()
        reply = msgpack.unpackb(record.value)
        with lock:
            out.append({"id": call_id, "keys": list(reply), "reply": reply})
        break
    else:
        with lock:
            out.append({"id": call_id, "keys": [], "reply": None})
    consumer.close()
    producer.close()


def caller(bootstrap, service, calls):
    out, lock, threads = [], threading.Lock(), []
    # The clock in 100 ns units, as the original's ids, made distinct per
    # thread (the original's are not: two callers in one tick collide).
    base = time.time_ns() // 100
    for n, (method, params) in enumerate(calls):
        thread = threading.Thread(
            target=call, args=(bootstrap, service, method, params, str(base + n), out, lock)
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    out.sort(key=lambda reply: int(reply["id"]))
    for reply in out:
        print(json.dumps(reply))


class Failed(Exception):
    pass


def echo(message):
    return f"RPC {message}!"


def add(a, b):
    return a + b


def fail():
    raise Failed("it failed")


def sleep(seconds):
    time.sleep(seconds)
    return seconds


METHODS = {"echo": echo, "add": add, "fail": fail, "sleep": sleep}


def receiver(bootstrap, service):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="default",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    partition = TopicPartition(f"{service}_method_requests", 0)
    consumer.assign([partition])
    consumer.position(partition)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    print("ready", flush=True)
    for record in consumer:
        if record.key is not None:
            continue
        request = msgpack.unpackb(record.value)
        # As the original: a notification (no id) would raise KeyError here.
        call_id = request["id"]
        method, params = request["method"], request["params"]
        reply = {"jsonrpc": "2.0", "id": call_id}
        function = METHODS.get(method)
        try:
            if function is None:
                reply["error"] = {"code": -32601, "message": "Method not found"}
                # The original's quirk: one positional argument comes back
                # as a result beside the error.
                if isinstance(params, list) and len(params) == 1:
                    reply["result"] = params[0]
            elif isinstance(params, dict):
                reply["result"] = function(**params)
            else:
                reply["result"] = function(*params)
        except TypeError as e:
            reply["error"] = {"code": -32602, "message": str(e)}
        except Failed as e:
            reply["error"] = {"code": -32000, "message": str(e)}
        producer.send(RESULTS, key=call_id.encode(), value=msgpack.packb(reply), partition=0)
        producer.flush()
        consumer.commit()
        print(json.dumps({"id": call_id, "method": method}), flush=True)


def main():
    role, bootstrap, service = sys.argv[1:4]
    if role == "caller":
        caller(bootstrap, service, json.loads(sys.argv[4]))
    else:
        receiver(bootstrap, service)


if __name__ == "__main__":
    main()
