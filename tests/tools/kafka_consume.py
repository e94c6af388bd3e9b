"""An independent Kafka consumer for the end-to-end tests (the official
confluent-kafka client, not project code). Prints one JSON line per message.

usage: kafka_consume.py BROKERS GROUP TIMEOUT_SECONDS EXPECTED TOPIC...
Stops once EXPECTED distinct event ids (ce_id) have arrived and nothing new
came for two seconds (so duplicates are seen too), or after TIMEOUT_SECONDS."""
import json
import sys
import time

from confluent_kafka import Consumer

brokers, group, timeout, expected = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
topics = sys.argv[5:]
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
})
consumer.subscribe(topics)
ids = set()
deadline = time.time() + timeout
last_message = time.time()
while time.time() < deadline:
    if len(ids) >= expected and time.time() - last_message > 2:
        break
    message = consumer.poll(0.2)
    if message is None or message.error():
        continue
    last_message = time.time()
    ids.add(dict(message.headers() or []).get("ce_id"))
    print(json.dumps({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": message.key().decode() if message.key() else None,
        "headers": {k: v.decode() for k, v in (message.headers() or [])},
        "value": json.loads(message.value()),
    }), flush=True)
consumer.close()
