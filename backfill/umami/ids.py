"""Row ids: Umami's own derivations where later traffic must join our rows, ours elsewhere.

Umami 3 (``src/lib/crypto.ts``): ``hash(...parts)`` is the SHA-512 hex digest of
the parts joined with nothing; ``secret()`` is ``hash(APP_SECRET or
DATABASE_URL)``; ``uuid(...parts)`` is the UUIDv5 (DNS namespace) of
``hash(...parts, secret())``. A session id is ``uuid(websiteId, distinctId)`` and
a visit id ``uuid(sessionId, hash(startOfHour(createdAt).toUTCString()))``. With
the server's secret, sessions we write are the sessions live traffic and later
API imports with the same distinct id land in.

Every other row (events, event data, revenue, session data) gets an id of ours,
derived from the website and the source row, so writing the same row twice
(a replayed chunk after a crash, a second run of the same import) hits the
primary key instead of adding a copy. These ids are UUIDv8 (RFC 9562): the
first 48 bits are the event time in milliseconds (so new rows go to the right
end of the primary key index, as UUIDv7 would), then the version nibble ``8``
and a fixed 12-bit mark ``b4c``, then 62 bits of a BLAKE2b digest. Umami itself
writes v4 (or v7) ids, so ``event_id::text LIKE '________-____-8b4c-%'`` finds
exactly the rows an import wrote (README: removing an import).
"""

from __future__ import annotations

import functools
import hashlib
import uuid

import polars as pl

#: The 12 bits after the version nibble in every id we mint: ``xxxxxxxx-xxxx-8b4c-...``.
ID_MARK = 0xB4C
ID_MARK_TEXT = "8b4c"
#: The secret our session ids are salted with when the server's is not given: a
#: documented constant, so the ids are deterministic (a re-run writes the same
#: sessions) but cannot be mistaken for ids Umami derived with its own secret.
NO_SECRET = "umami-backfill: no APP_SECRET given"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def umami_hash(*parts: str) -> str:
    return hashlib.sha512("".join(parts).encode()).hexdigest()


def umami_secret(app_secret: str | None) -> str:
    """``secret()`` of a server whose APP_SECRET (or, without one, DATABASE_URL) is ``app_secret``."""
    return umami_hash(app_secret if app_secret else NO_SECRET)


_DNS = uuid.NAMESPACE_DNS.bytes


def umami_uuid(secret: str, *parts: str) -> str:
    """``uuid.uuid5(NAMESPACE_DNS, hash(*parts, secret))``, formatted without building a UUID object
    (this runs once per session and visit of an import)."""
    digest = bytearray(hashlib.sha1(_DNS + umami_hash(*parts, secret).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01, for any year (H. Hinnant's algorithm):
    JavaScript dates reach year 275760, Python's datetime stops at 9999."""
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def utc_string(seconds: int) -> str:
    """``new Date(seconds * 1000).toUTCString()``: ``Fri, 01 Mar 2024 08:00:00 GMT``."""
    days, rest = divmod(seconds, 86400)
    year, month, day = civil_from_days(days)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (index 3 from Monday)
    year_text = f"{year:04d}" if year >= 0 else f"-{-year:06d}"
    return (
        f"{_DAYS[weekday]}, {day:02d} {_MONTHS[month - 1]} {year_text} "
        f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d} GMT"
    )


@functools.lru_cache(maxsize=65_536)
def hour_salt(seconds: int) -> str:
    """``hash(startOfHour(createdAt).toUTCString())`` for a server running in UTC."""
    return umami_hash(utc_string(seconds - seconds % 3600))


def month_salt(seconds: int) -> str:
    """``getSalt('month', createdAt)``: the session salt of rows without a distinct id."""
    _, _, day = civil_from_days(seconds // 86400)
    return _day_salt(seconds // 86400 - (day - 1))


@functools.lru_cache(maxsize=4_096)
def _day_salt(days: int) -> str:
    return umami_hash(utc_string(days * 86400))


def marked_id(millis: int, digest: bytes) -> str:
    """A UUIDv8 of ours: 48-bit time, version 8, mark ``b4c``, variant, 62 digest bits."""
    low = (int.from_bytes(digest[:8], "big") & ((1 << 62) - 1)) | (0b10 << 62)
    high = f"{millis & ((1 << 48) - 1):012x}"
    tail = f"{low:016x}"
    return f"{high[:8]}-{high[8:]}-{ID_MARK_TEXT}-{tail[:4]}-{tail[4:]}"


def row_digest(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()


def marked_ids(millis: pl.Series, keys: pl.Series) -> pl.Series:
    """:func:`marked_id` of each (time, key) pair; ``keys`` already identify the row uniquely.

    One Python loop makes each id's 16 bytes (time, mark, BLAKE2b digest); the variant
    bits and the text are laid out column-wise."""
    blake2b, low48, mark = hashlib.blake2b, (1 << 48) - 1, (0x8000 | ID_MARK).to_bytes(2, "big")
    raw = [
        (ms & low48).to_bytes(6, "big") + mark + blake2b(key, digest_size=8).digest()
        for ms, key in zip(millis.cast(pl.Int64).to_list(), keys.cast(pl.Binary).to_list(), strict=True)
    ]
    return _uuid_text(raw, version=None)


def umami_uuids(secret: str, joined: pl.Series) -> pl.Series:
    """:func:`umami_uuid` of each row's parts, given already joined (``"".join(parts)``, no
    nulls): both digests in one Python loop, the UUID text laid out column-wise."""
    sha512, sha1, suffix = hashlib.sha512, hashlib.sha1, secret.encode()
    digests = [
        sha1(_DNS + sha512(name + suffix).hexdigest().encode()).digest() for name in joined.cast(pl.Binary).to_list()
    ]
    return _uuid_text(digests, version="5")


_HEX = "0123456789abcdef"


def _uuid_text(raw: list[bytes], version: str | None) -> pl.Series:
    """``xxxxxxxx-xxxx-Vxxx-Rxxx-xxxxxxxxxxxx`` of 16 bytes each: the version digit set
    (unless None: already in the bytes) and the RFC 4122 variant (``10`` in the top bits of R)."""
    hexed = pl.Series("h", raw, dtype=pl.Binary).bin.encode("hex").to_frame()
    h = pl.col("h")
    first = h.str.slice(16, 1)
    variant = first.replace_strict(list(_HEX), [_HEX[(i & 3) | 8] for i in range(16)], return_dtype=pl.String)
    third = h.str.slice(12, 4) if version is None else pl.concat_str(pl.lit(version), h.str.slice(13, 3))
    text = pl.concat_str(
        h.str.slice(0, 8),
        pl.lit("-"),
        h.str.slice(8, 4),
        pl.lit("-"),
        third,
        pl.lit("-"),
        variant,
        h.str.slice(17, 3),
        pl.lit("-"),
        h.str.slice(20, 12),
    )
    return hexed.select(text.alias("id")).to_series()
