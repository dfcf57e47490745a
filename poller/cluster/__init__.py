"""Sharing the fleet among poller replicas (static shards; rendezvous assignment)."""

from poller.cluster.assign import Member, assign, owner, shard_counts, shard_of

__all__ = ["Member", "assign", "owner", "shard_counts", "shard_of"]
