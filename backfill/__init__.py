"""umami-backfill: historical analytics into Umami."""

import os

# polars' allocator (jemalloc) keeps freed pages for 10 s by default; with a reader
# thread beside the transform that retention alone added 100-150 MB of peak RSS.
# A background thread returning them after 100 ms keeps memory flat without
# slowing the hot path (returning them at once cost 15-25% of throughput). It
# must be set before polars is first imported; a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0")

__version__ = "0.1.0"
