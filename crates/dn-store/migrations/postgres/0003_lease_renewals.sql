-- Heartbeats that extended each job's lease, by any worker on any node (for /metrics).
ALTER TABLE jobs ADD COLUMN lease_renewals BIGINT NOT NULL DEFAULT 0;
