-- Automatic retries of failed attempts: how many were spent, and when the job may be claimed again.
ALTER TABLE jobs ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN not_before BIGINT;
