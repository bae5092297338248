"""A real redis-server for the test session: the dev stack's own :class:`RedisProcess`."""

from __future__ import annotations

import redis

from hpcbridge.dev import RedisProcess, free_port

__all__ = ["RedisServer", "free_port"]


class RedisServer(RedisProcess):
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def start(self) -> RedisServer:
        super().start()
        return self
