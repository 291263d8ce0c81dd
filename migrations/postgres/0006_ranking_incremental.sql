-- Incremental best-seller aggregation (issue #13): the job adds the PAID orders it has not
-- counted yet instead of recomputing days from raw orders. `ranking_counted` remembers the
-- orders counted in the recent overlap window, so re-reading that window never double counts;
-- older entries are pruned by the job.
CREATE TABLE ranking_counted (
    order_id BIGINT      PRIMARY KEY,
    paid_at  TIMESTAMPTZ NOT NULL,
    run      BIGINT      NOT NULL
);
CREATE INDEX ranking_counted_by_run ON ranking_counted (run);

-- Lower bound of paid_at for the next incremental read, and the run counter.
ALTER TABLE ranking_state ADD COLUMN window_from TIMESTAMPTZ;
ALTER TABLE ranking_state ADD COLUMN run BIGINT NOT NULL DEFAULT 0;
