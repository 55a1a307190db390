"""umami-backfill: historical analytics into Umami."""

import os

# polars' allocator (jemalloc) keeps freed pages for a while; with a reader thread
# beside the transform that retention alone added ~100 MB of peak RSS per 100k-row
# chunk. Returning pages at once keeps memory flat at a small speed cost. It must
# be set before polars is first imported; a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

__version__ = "0.1.0"
