-- Umami 3.1's ClickHouse tables and views, described for our tests from reading Umami's
-- db/clickhouse/schema.sql: the names, types, engines, keys and view logic agree with it. One
-- difference: the hourly table needs allow_dimensions_outside_sorting_key on ClickHouse 26.
CREATE DATABASE IF NOT EXISTS umami;

CREATE TABLE umami.website_event (
    website_id UUID, session_id UUID, visit_id UUID, event_id UUID,
    hostname LowCardinality(String), browser LowCardinality(String), os LowCardinality(String),
    device LowCardinality(String), screen LowCardinality(String), language LowCardinality(String),
    country LowCardinality(String), region LowCardinality(String), city String,
    url_path String, url_query String,
    utm_source String, utm_medium String, utm_campaign String, utm_content String, utm_term String,
    referrer_path String, referrer_query String, referrer_domain String, page_title String,
    gclid String, fbclid String, msclkid String, ttclid String, li_fat_id String, twclid String,
    lcp Nullable(Decimal(10, 1)), inp Nullable(Decimal(10, 1)), cls Nullable(Decimal(10, 4)),
    fcp Nullable(Decimal(10, 1)), ttfb Nullable(Decimal(10, 1)),
    event_type UInt32, event_name String, tag String, distinct_id String,
    created_at DateTime('UTC'), job_id Nullable(UUID)
) ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (toStartOfHour(created_at), website_id, session_id, visit_id, created_at)
PRIMARY KEY (toStartOfHour(created_at), website_id, session_id, visit_id)
SETTINGS index_granularity = 8192;

CREATE TABLE umami.event_data (
    website_id UUID, session_id UUID, event_id UUID, url_path String, event_name String,
    data_key String, string_value Nullable(String), number_value Nullable(Decimal(22, 4)),
    date_value Nullable(DateTime('UTC')), data_type UInt32, created_at DateTime('UTC'), job_id Nullable(UUID)
) ENGINE = MergeTree
ORDER BY (website_id, event_id, data_key, created_at)
SETTINGS index_granularity = 8192;

CREATE TABLE umami.session_data (
    website_id UUID, session_id UUID, data_key String, string_value Nullable(String),
    number_value Nullable(Decimal(22, 4)), date_value Nullable(DateTime('UTC')), data_type UInt32,
    distinct_id String, created_at DateTime('UTC'), job_id Nullable(UUID)
) ENGINE = ReplacingMergeTree
ORDER BY (website_id, session_id, data_key)
SETTINGS index_granularity = 8192;

CREATE TABLE umami.website_event_stats_hourly (
    website_id UUID, session_id UUID, visit_id UUID,
    hostname SimpleAggregateFunction(groupArrayArray, Array(String)),
    browser LowCardinality(String), os LowCardinality(String), device LowCardinality(String),
    screen LowCardinality(String), language LowCardinality(String), country LowCardinality(String),
    region LowCardinality(String), city String,
    entry_url AggregateFunction(argMin, String, DateTime('UTC')),
    exit_url AggregateFunction(argMax, String, DateTime('UTC')),
    url_path SimpleAggregateFunction(groupArrayArray, Array(String)),
    url_query SimpleAggregateFunction(groupArrayArray, Array(String)),
    utm_source SimpleAggregateFunction(groupArrayArray, Array(String)),
    utm_medium SimpleAggregateFunction(groupArrayArray, Array(String)),
    utm_campaign SimpleAggregateFunction(groupArrayArray, Array(String)),
    utm_content SimpleAggregateFunction(groupArrayArray, Array(String)),
    utm_term SimpleAggregateFunction(groupArrayArray, Array(String)),
    referrer_domain SimpleAggregateFunction(groupArrayArray, Array(String)),
    page_title SimpleAggregateFunction(groupArrayArray, Array(String)),
    gclid SimpleAggregateFunction(groupArrayArray, Array(String)),
    fbclid SimpleAggregateFunction(groupArrayArray, Array(String)),
    msclkid SimpleAggregateFunction(groupArrayArray, Array(String)),
    ttclid SimpleAggregateFunction(groupArrayArray, Array(String)),
    li_fat_id SimpleAggregateFunction(groupArrayArray, Array(String)),
    twclid SimpleAggregateFunction(groupArrayArray, Array(String)),
    event_type UInt32,
    event_name SimpleAggregateFunction(groupArrayArray, Array(String)),
    views SimpleAggregateFunction(sum, UInt64),
    min_time SimpleAggregateFunction(min, DateTime('UTC')),
    max_time SimpleAggregateFunction(max, DateTime('UTC')),
    tag SimpleAggregateFunction(groupArrayArray, Array(String)),
    distinct_id String,
    created_at DateTime('UTC')
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (website_id, event_type, toStartOfHour(created_at), cityHash64(visit_id), visit_id)
SAMPLE BY cityHash64(visit_id)
SETTINGS allow_dimensions_outside_sorting_key = 1;

-- One row per (website, session, visit, hour, session attributes, event type) and inserted block;
-- the engine merges the rows of one key later (arrays concatenated, views summed).
CREATE MATERIALIZED VIEW umami.website_event_stats_hourly_mv TO umami.website_event_stats_hourly AS
SELECT
    website_id, session_id, visit_id, hostnames AS hostname,
    browser, os, device, screen, language, country, region, city,
    entry_url, exit_url, paths AS url_path, url_query,
    utm_source, utm_medium, utm_campaign, utm_content, utm_term,
    referrer_domain, page_title, gclid, fbclid, msclkid, ttclid, li_fat_id, twclid,
    event_type, event_name, views, min_time, max_time, tag, distinct_id,
    hour AS created_at
FROM (
    SELECT
        website_id, session_id, visit_id,
        arrayFilter(v -> v != '', groupArray(hostname)) AS hostnames,
        browser, os, device, screen, language, country, region, city,
        argMinState(url_path, created_at) AS entry_url,
        argMaxState(url_path, created_at) AS exit_url,
        arrayFilter(v -> v != '', groupArray(url_path)) AS paths,
        arrayFilter(v -> v != '', groupArray(url_query)) AS url_query,
        arrayFilter(v -> v != '', groupArray(utm_source)) AS utm_source,
        arrayFilter(v -> v != '', groupArray(utm_medium)) AS utm_medium,
        arrayFilter(v -> v != '', groupArray(utm_campaign)) AS utm_campaign,
        arrayFilter(v -> v != '', groupArray(utm_content)) AS utm_content,
        arrayFilter(v -> v != '', groupArray(utm_term)) AS utm_term,
        arrayFilter(v -> v != '' AND v != hostname, groupArray(referrer_domain)) AS referrer_domain,
        arrayFilter(v -> v != '', groupArray(page_title)) AS page_title,
        arrayFilter(v -> v != '', groupArray(gclid)) AS gclid,
        arrayFilter(v -> v != '', groupArray(fbclid)) AS fbclid,
        arrayFilter(v -> v != '', groupArray(msclkid)) AS msclkid,
        arrayFilter(v -> v != '', groupArray(ttclid)) AS ttclid,
        arrayFilter(v -> v != '', groupArray(li_fat_id)) AS li_fat_id,
        arrayFilter(v -> v != '', groupArray(twclid)) AS twclid,
        event_type,
        if(event_type = 2, groupArray(event_name), []) AS event_name,
        sumIf(1, event_type NOT IN (2, 5)) AS views,
        min(created_at) AS min_time,
        max(created_at) AS max_time,
        arrayFilter(v -> v != '', groupArray(tag)) AS tag,
        distinct_id,
        toStartOfHour(created_at) AS hour
    FROM umami.website_event
    GROUP BY website_id, session_id, visit_id, hostname, browser, os, device, screen, language,
        country, region, city, event_type, distinct_id, hour
);

ALTER TABLE umami.website_event ADD PROJECTION website_event_url_path_projection
    (SELECT * ORDER BY toStartOfDay(created_at), website_id, url_path, created_at);
ALTER TABLE umami.website_event ADD PROJECTION website_event_referrer_domain_projection
    (SELECT * ORDER BY toStartOfDay(created_at), website_id, referrer_domain, created_at);

CREATE TABLE umami.website_revenue (
    website_id UUID, session_id UUID, event_id UUID, event_name String, currency String,
    revenue Decimal(18, 4), created_at DateTime('UTC')
) ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (website_id, session_id, created_at)
SETTINGS index_granularity = 8192;

-- Revenue is derived inside each inserted block of event_data: a key containing "revenue"
-- paired with every key containing "currency" of the same event.
CREATE MATERIALIZED VIEW umami.website_revenue_mv TO umami.website_revenue AS
SELECT DISTINCT
    amount.website_id, amount.session_id, amount.event_id, amount.event_name, unit.currency,
    coalesce(toDecimal64(amount.number_value, 2), toDecimal64(amount.string_value, 2)) AS revenue,
    amount.created_at
FROM umami.event_data AS amount
JOIN (
    SELECT event_id, string_value AS currency FROM umami.event_data
    WHERE positionCaseInsensitive(data_key, 'currency') > 0
) AS unit ON unit.event_id = amount.event_id
WHERE positionCaseInsensitive(amount.data_key, 'revenue') > 0;
