"""What Umami does, in one place: everything here describes Umami, nothing here describes us.

Every sink and check that must agree with a real Umami 3.1 reads it from this package:

- ``detect``: the browser, OS and device Umami stores for a user agent and screen
  (detect-browser's rules as data, our device rules), checked against 5,034 recorded cases.
- ``bots``: isbot's pattern list, which Umami uses to drop crawler requests.
- ``vocabulary``: other tools' browser/OS/device names mapped onto the strings Umami stores.
- ``js``: JavaScript string and URL semantics (UTF-16 cuts, ``decodeURI``, ``new URL``).
- ``ids``: Umami's formulas for session and visit ids.
- ``eventdata``: how Umami flattens and types event and session data.
- ``stored``: what Umami stores for a block of ``/api/batch`` elements, the values every
  database sink lays out in its own tables (PostgreSQL, ClickHouse).
- ``api``: Umami's authenticated read API (login, API key, website checks).
"""
