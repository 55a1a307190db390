-- The tables an Umami 3.1 PostgreSQL database holds that the database sink reads or
-- writes, with their columns, keys and indexes, written from the facts of Umami's
-- Prisma schema (3.1.0). Not Umami's own migration files: tests create a throwaway
-- database from this text.

CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE "website" (
    "website_id" UUID PRIMARY KEY,
    "name" VARCHAR(100) NOT NULL,
    "domain" VARCHAR(500),
    "reset_at" TIMESTAMPTZ(6),
    "user_id" UUID,
    "team_id" UUID,
    "created_by" UUID,
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6),
    "deleted_at" TIMESTAMPTZ(6)
);

CREATE TABLE "session" (
    "session_id" UUID PRIMARY KEY,
    "website_id" UUID NOT NULL,
    "browser" VARCHAR(20),
    "os" VARCHAR(20),
    "device" VARCHAR(20),
    "screen" VARCHAR(11),
    "language" VARCHAR(35),
    "country" CHAR(2),
    "region" VARCHAR(20),
    "city" VARCHAR(50),
    "distinct_id" VARCHAR(50),
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "session_created_at_idx" ON "session"("created_at");
CREATE INDEX "session_website_id_idx" ON "session"("website_id");
CREATE INDEX "session_website_id_created_at_idx" ON "session"("website_id", "created_at");
CREATE INDEX "session_website_id_created_at_browser_idx" ON "session"("website_id", "created_at", "browser");
CREATE INDEX "session_website_id_created_at_os_idx" ON "session"("website_id", "created_at", "os");
CREATE INDEX "session_website_id_created_at_device_idx" ON "session"("website_id", "created_at", "device");
CREATE INDEX "session_website_id_created_at_screen_idx" ON "session"("website_id", "created_at", "screen");
CREATE INDEX "session_website_id_created_at_language_idx" ON "session"("website_id", "created_at", "language");
CREATE INDEX "session_website_id_created_at_country_idx" ON "session"("website_id", "created_at", "country");
CREATE INDEX "session_website_id_created_at_region_idx" ON "session"("website_id", "created_at", "region");
CREATE INDEX "session_website_id_created_at_city_idx" ON "session"("website_id", "created_at", "city");

CREATE TABLE "website_event" (
    "event_id" UUID PRIMARY KEY,
    "website_id" UUID NOT NULL,
    "session_id" UUID NOT NULL,
    "visit_id" UUID NOT NULL,
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP,
    "url_path" VARCHAR(500) NOT NULL,
    "url_query" VARCHAR(500),
    "utm_source" VARCHAR(255),
    "utm_medium" VARCHAR(255),
    "utm_campaign" VARCHAR(255),
    "utm_content" VARCHAR(255),
    "utm_term" VARCHAR(255),
    "referrer_path" VARCHAR(500),
    "referrer_query" VARCHAR(500),
    "referrer_domain" VARCHAR(500),
    "page_title" VARCHAR(500),
    "gclid" VARCHAR(255),
    "fbclid" VARCHAR(255),
    "msclkid" VARCHAR(255),
    "ttclid" VARCHAR(255),
    "li_fat_id" VARCHAR(255),
    "twclid" VARCHAR(255),
    "event_type" INTEGER NOT NULL DEFAULT 1,
    "event_name" VARCHAR(50),
    "tag" VARCHAR(50),
    "hostname" VARCHAR(100),
    "lcp" DECIMAL(10, 1),
    "inp" DECIMAL(10, 1),
    "cls" DECIMAL(10, 4),
    "fcp" DECIMAL(10, 1),
    "ttfb" DECIMAL(10, 1)
);
CREATE INDEX "website_event_created_at_idx" ON "website_event"("created_at");
CREATE INDEX "website_event_session_id_idx" ON "website_event"("session_id");
CREATE INDEX "website_event_visit_id_idx" ON "website_event"("visit_id");
CREATE INDEX "website_event_website_id_idx" ON "website_event"("website_id");
CREATE INDEX "website_event_website_id_created_at_idx" ON "website_event"("website_id", "created_at");
CREATE INDEX "website_event_website_id_created_at_url_path_idx" ON "website_event"("website_id", "created_at", "url_path");
CREATE INDEX "website_event_website_id_created_at_url_query_idx" ON "website_event"("website_id", "created_at", "url_query");
CREATE INDEX "website_event_website_id_created_at_referrer_domain_idx" ON "website_event"("website_id", "created_at", "referrer_domain");
CREATE INDEX "website_event_website_id_created_at_page_title_idx" ON "website_event"("website_id", "created_at", "page_title");
CREATE INDEX "website_event_website_id_created_at_event_name_idx" ON "website_event"("website_id", "created_at", "event_name");
CREATE INDEX "website_event_website_id_created_at_tag_idx" ON "website_event"("website_id", "created_at", "tag");
CREATE INDEX "website_event_website_id_session_id_created_at_idx" ON "website_event"("website_id", "session_id", "created_at");
CREATE INDEX "website_event_website_id_visit_id_created_at_idx" ON "website_event"("website_id", "visit_id", "created_at");
CREATE INDEX "website_event_website_id_created_at_hostname_idx" ON "website_event"("website_id", "created_at", "hostname");

CREATE TABLE "event_data" (
    "event_data_id" UUID PRIMARY KEY,
    "website_id" UUID NOT NULL,
    "website_event_id" UUID NOT NULL,
    "data_key" VARCHAR(500) NOT NULL,
    "string_value" VARCHAR(500),
    "number_value" DECIMAL(19, 4),
    "date_value" TIMESTAMPTZ(6),
    "data_type" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "event_data_created_at_idx" ON "event_data"("created_at");
CREATE INDEX "event_data_website_id_idx" ON "event_data"("website_id");
CREATE INDEX "event_data_website_event_id_idx" ON "event_data"("website_event_id");
CREATE INDEX "event_data_website_id_created_at_idx" ON "event_data"("website_id", "created_at");
CREATE INDEX "event_data_website_id_created_at_data_key_idx" ON "event_data"("website_id", "created_at", "data_key");

CREATE TABLE "session_data" (
    "session_data_id" UUID PRIMARY KEY,
    "website_id" UUID NOT NULL,
    "session_id" UUID NOT NULL,
    "data_key" VARCHAR(500) NOT NULL,
    "string_value" VARCHAR(500),
    "number_value" DECIMAL(19, 4),
    "date_value" TIMESTAMPTZ(6),
    "data_type" INTEGER NOT NULL,
    "distinct_id" VARCHAR(50),
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "session_data_created_at_idx" ON "session_data"("created_at");
CREATE INDEX "session_data_website_id_idx" ON "session_data"("website_id");
CREATE INDEX "session_data_session_id_idx" ON "session_data"("session_id");
CREATE INDEX "session_data_session_id_created_at_idx" ON "session_data"("session_id", "created_at");
CREATE INDEX "session_data_website_id_created_at_data_key_idx" ON "session_data"("website_id", "created_at", "data_key");

CREATE TABLE "revenue" (
    "revenue_id" UUID PRIMARY KEY,
    "website_id" UUID NOT NULL,
    "session_id" UUID NOT NULL,
    "event_id" UUID NOT NULL,
    "event_name" VARCHAR(50) NOT NULL,
    "currency" VARCHAR(10) NOT NULL,
    "revenue" DECIMAL(19, 4),
    "created_at" TIMESTAMPTZ(6) DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "revenue_website_id_idx" ON "revenue"("website_id");
CREATE INDEX "revenue_session_id_idx" ON "revenue"("session_id");
CREATE INDEX "revenue_website_id_created_at_idx" ON "revenue"("website_id", "created_at");
CREATE INDEX "revenue_website_id_session_id_created_at_idx" ON "revenue"("website_id", "session_id", "created_at");

INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at", "migration_name", "applied_steps_count")
SELECT md5(name), md5(name || 'checksum'), now(), name, 1
FROM unnest(ARRAY[
    '01_init', '02_report_schema_session_data', '03_metric_performance_index', '04_team_redesign',
    '05_add_visit_id', '06_session_data', '07_add_tag', '08_add_utm_clid', '09_update_hostname_region',
    '10_add_distinct_id', '11_add_segment', '12_update_report_parameter', '13_add_revenue',
    '14_add_link_and_pixel', '15_add_share', '16_boards', '17_remove_duplicate_key',
    '18_add_performance', '19_add_session_replay'
]) AS name;
