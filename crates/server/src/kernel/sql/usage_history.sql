-- Usage history (issue 12): each subscription's counts over time. at is unix seconds: the
-- minute of a change (coalesced: the minute's last counts) or the hour of the hourly sample.
-- An hour whose counts equal the point before it is not stored; readers carry the last point
-- forward, so the series answers every hour.
CREATE TABLE usage_points (
    tenant_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    at BIGINT NOT NULL,
    seats BIGINT NOT NULL,
    active BIGINT NOT NULL,
    waitlisted BIGINT NOT NULL,
    overage BIGINT NOT NULL,
    idle BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, product, at)
) {WITHOUT_ROWID};
CREATE INDEX usage_points_at ON usage_points (at)
