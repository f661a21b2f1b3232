-- Jobs: mutable state in columns, the request-derived parts as JSON text. Times are unix microseconds.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT,
    backend TEXT NOT NULL,
    trainer_type TEXT NOT NULL,
    model TEXT NOT NULL,
    project_ref TEXT,
    run_ref TEXT,
    dataset_ref TEXT,
    trajectory_dataset_refs TEXT NOT NULL,
    capability TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    tags TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    cancel_requested_at BIGINT,
    updated_at BIGINT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT
);
CREATE INDEX jobs_queue ON jobs (status, created_at, id);
CREATE INDEX jobs_scope ON jobs (organization_id, workspace_id, created_at);

CREATE TABLE job_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    attempt BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE job_attempts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    attempt BIGINT NOT NULL,
    worker_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
