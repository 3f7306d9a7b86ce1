"""A downstream service with no ledger code: reads the events of one customer from the ledger's JetStream stream
through a durable pull consumer, in order, acknowledging each, and prints `position event-id type subject` per event.

Usage: jetstream_consumer.py NATS_URL STREAM DURABLE FILTER_SUBJECT MOST
It stops after MOST events, or once the stream has had nothing more for two seconds; run again, it resumes after the
last event it acknowledged.
"""

import asyncio
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout


async def main() -> None:
    url, stream, durable, subject, most = sys.argv[1:6]
    most = int(most)
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    got = 0
    while got < most:
        try:
            batch = await sub.fetch(min(100, most - got), timeout=2)
        except NatsTimeout:
            break
        for msg in batch:
            h = msg.headers or {}
            print(h["ce-ledgerposition"], h["ce-id"], h["ce-type"], msg.subject, flush=True)
            await msg.ack_sync()
            got += 1
    await nc.close()


asyncio.run(main())
