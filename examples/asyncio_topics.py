#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Waits on several topics from one asyncio event loop.

fabric_shm.Waiter turns any number of consumers (any topics, any pools) into one file
descriptor: loop.add_reader() wakes the loop when one of them has something to poll. The
callback polls every consumer with timeout 0 (never blocking the loop), then re-arms.

    PYTHONPATH=build/python python3 examples/asyncio_topics.py [POOL] [COUNT]

creates topics 'orders' and 'payments' on POOL (default: a fresh pool, removed at the end),
sends COUNT messages to each from a thread, and prints what arrives until it has them all.
"""
import asyncio
import os
import sys
import threading

import fabric_shm as fs


async def consume(pool, topics, expected):
    consumers = {}
    for topic in topics:
        c = fs.Consumer(pool, topic)  # an observer; use a GroupConsumer for a group
        c.assign_all()
        consumers[topic] = c
    waiter = fs.Waiter()
    for c in consumers.values():
        waiter.add(c)
    loop = asyncio.get_running_loop()
    received = {topic: 0 for topic in topics}
    done = asyncio.Event()

    def on_ready():
        for topic, consumer in consumers.items():
            while batch := consumer.poll(max=64, timeout=0):
                for msg in batch:
                    received[topic] += 1
                    print(f"{topic}[{msg.partition}]@{msg.offset}: {msg.value_str()}")
        if sum(received.values()) >= expected:
            done.set()
        waiter.arm()  # readable again once a consumer has more

    fd = waiter.fd()
    waiter.arm()
    loop.add_reader(fd, on_ready)
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        loop.remove_reader(fd)
        for c in consumers.values():
            waiter.remove(c)
    return received


def produce(pool, topics, count):
    producers = [fs.Producer(pool, t) for t in topics]
    for i in range(count):
        for topic, producer in zip(topics, producers):
            producer.send(f"{topic} #{i}")


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else f"asyncio-example-{os.getpid()}"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    topics = ["orders", "payments"]
    with fs.Pool.open(name, create_if_missing=True, size="8M") as pool:
        created = pool.created
        for topic in topics:
            pool.topics().ensure(topic, fs.TopicConfig(num_partitions=2, on_full=fs.OnFull.OVERWRITE))
        sender = threading.Thread(target=produce, args=(pool, topics, count))
        consumer = consume(pool, topics, count * len(topics))
        sender.start()
        received = asyncio.run(consumer)
        sender.join()
        print("received:", received)
    if created:
        fs.Pool.remove(name, force=True)


if __name__ == "__main__":
    main()
