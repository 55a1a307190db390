"""The column names of Google Analytics reports: UA and GA4 "Download CSV" headers in
English, German and some French and Spanish, and the Data API's own names (``pagePath``,
``screenPageViews``, ...), each mapped to one canonical name the report reader uses.
"""

from __future__ import annotations

#: Canonical name -> header names as GA writes them (compared lower-cased, spaces collapsed).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "date": ("date", "day", "datum", "tag", "jour", "fecha"),
    "day_index": ("day index", "nth day", "tagesindex", "index des tages", "n-ter tag", "ntes tag", "index du jour"),
    "page": (
        "page",
        "page path",
        "page path and screen class",
        "page path + query string",
        "page location",
        "landing page",
        "seite",
        "seitenpfad",
        "seitenpfad und bildschirmklasse",
        "seitenpfad + abfragestring",
        "seitenpfad und abfragestring",
        "seitenstandort",
        "zielseite",
        "chemin de la page et classe de l'écran",
        "página",
        "pagepath",  # the Data API's names (runReport headers)
        "pagepathplusquerystring",
        "pagelocation",
        "unifiedpagepathscreen",
        "landingpage",
    ),
    "page_title": (
        "page title",
        "page title and screen class",
        "page title and screen name",
        "seitentitel",
        "seitentitel und bildschirmklasse",
        "seitentitel und bildschirmname",
        "titre de la page",
        "pagetitle",
        "unifiedscreenname",
    ),
    "source": (
        "source",
        "session source",
        "first user source",
        "quelle",
        "sitzungsquelle",
        "source de la session",
        "sessionsource",
    ),
    "medium": ("medium", "session medium", "first user medium", "sitzungsmedium", "support", "sessionmedium"),
    "source_medium": (
        "source / medium",
        "source/medium",
        "session source / medium",
        "first user source / medium",
        "quelle / medium",
        "quelle/medium",
        "sitzungsquelle / -medium",
        "sitzungsquelle/-medium",
        "source/support",
        "source / support",
        "sessionsourcemedium",
    ),
    "event_name": ("event name", "event action", "ereignisname", "ereignisaktion", "nom de l'événement", "eventname"),
    "pageviews": (
        "pageviews",
        "views",
        "page views",
        "seitenaufrufe",
        "aufrufe",
        "vues",
        "pages vues",
        "screenpageviews",
    ),
    "users": (
        "users",
        "total users",
        "active users",
        "nutzer",
        "nutzer insgesamt",
        "aktive nutzer",
        "utilisateurs",
        "totalusers",
        "activeusers",
    ),
    "new_users": ("new users", "neue nutzer", "nouveaux utilisateurs", "newusers"),
    "sessions": ("sessions", "sitzungen", "sesiones"),
    "engaged_sessions": ("engaged sessions", "sitzungen mit interaktionen", "engagedsessions"),
    "bounces": ("bounces", "absprünge", "rebonds"),
    "event_count": (
        "event count",
        "total events",
        "ereignisanzahl",
        "ereignisse insgesamt",
        "nombre d'événements",
        "eventcount",
    ),
    "revenue": (
        "revenue",
        "total revenue",
        "purchase revenue",
        "transaction revenue",
        "e-commerce revenue",
        "gesamtumsatz",
        "umsatz",
        "umsatz aus käufen",
        "e-commerce-umsatz",
        "transaktionsumsatz",
        "revenus",
        "revenu total",
        "purchaserevenue",
        "totalrevenue",
    ),
    "transactions": (
        "transactions",
        "transaktionen",
        "ecommerce purchases",
        "e-commerce-käufe",
        "käufe",
        "ecommercepurchases",
    ),
    "hostname": ("hostname", "host name", "hostname der seite"),
    # per-visitor breakdowns (backfill.sources.ga_breakdowns)
    "country_id": ("countryid", "country id", "country iso code", "länder-id"),
    "country": ("country", "land", "pays", "país"),
    "region": ("region", "région", "región"),
    "city": ("city", "stadt", "ville", "ciudad"),
    "device": ("device category", "devicecategory", "gerätekategorie", "catégorie d'appareil"),
    "browser": ("browser", "navigateur", "navegador"),
    "os": ("operating system", "operatingsystem", "betriebssystem", "système d'exploitation"),
    "os_version": ("operating system version", "operatingsystemversion", "betriebssystemversion"),
    "language": ("language", "language code", "languagecode", "sprache", "sprachcode", "langue"),
    "screen": ("screen resolution", "screenresolution", "bildschirmauflösung", "résolution de l'écran"),
}
_CANONICAL = {name: canonical for canonical, names in SYNONYMS.items() for name in names}
DATE_DIMS = ("date", "day_index")
KEY_DIMS = ("hostname", "page", "page_title", "source", "medium", "source_medium", "event_name")
COUNT_METRICS = (
    "pageviews",
    "users",
    "new_users",
    "sessions",
    "engaged_sessions",
    "bounces",
    "event_count",
    "transactions",
)
#: Metrics that may be summed over an extra dimension (users may not: one user, many pages).
ADDITIVE = ("pageviews", "sessions", "engaged_sessions", "bounces", "event_count", "revenue", "transactions")
#: First-column labels of totals rows (GA4 puts one first, UA last with empty dimensions).
TOTAL_LABELS = frozenset(
    {"total", "totals", "grand total", "gesamtsumme", "summe", "gesamt", "insgesamt", "total général", "totales"}
)
#: GA4 automatic events that duplicate what pageviews, sessions and users already count.
GA_AUTOMATIC_EVENTS = {
    "page_view": "pageviews",
    "session_start": "sessions",
    "first_visit": "new users",
    "user_engagement": "engagement time",
}


def canonical_column(name: str) -> str | None:
    """GA header -> canonical name, or None for columns this reader does not use."""
    key = " ".join(name.replace('"', "").strip().lower().split())
    return _CANONICAL.get(key)
