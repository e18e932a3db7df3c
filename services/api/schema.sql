-- The API's read model: a projection of the event stream. Dropping it and replaying the stream
-- rebuilds it identically (ids are carried by events or assigned in stream order; times come from
-- the events). A read model of another schema version is dropped and replayed at start.
CREATE TABLE IF NOT EXISTS projection_schema (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name text PRIMARY KEY,
    last_sequence bigint NOT NULL,
    -- An event the read model cannot apply stops the projection there (fail loud), until fixed
    -- or skipped by an operator's decision (an event in the log).
    stalled_sequence bigint,
    stalled_subject text,
    stalled_error text,
    stalled_since timestamp
);
-- A batch of events is written in one statement whose first clause moves the checkpoint on (a
-- compare-and-set); this aborts the statement, and so writes nothing, when the checkpoint was not
-- where the batch follows it (another projector, or a reset). SQLSTATE EN001: "checkpoint moved".
CREATE OR REPLACE FUNCTION envstore_checkpoint_claimed(claimed boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT claimed THEN
        RAISE EXCEPTION 'the projection checkpoint is not where this batch follows it' USING ERRCODE = 'EN001';
    END IF;
    RETURN true;
END
$$;
-- The last stream sequence of each aggregate's subjects (an environment's tree, a namespace's own
-- events, a namespace's tree): what a command checked against this read model expects.
CREATE TABLE IF NOT EXISTS aggregate_position (
    subjects text PRIMARY KEY,
    last_sequence bigint NOT NULL
);
-- Events an operator decided to skip (projection.event_skipped), with why the read model refused them.
CREATE TABLE IF NOT EXISTS projection_dead_letter (
    sequence bigint PRIMARY KEY,
    subject text NOT NULL,
    error text NOT NULL,
    reason text NOT NULL,
    decided_by text NOT NULL,
    decided_on timestamp NOT NULL
);
CREATE TABLE IF NOT EXISTS namespace (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    metadata jsonb,
    created_on timestamp NOT NULL,
    deleted_on timestamp
);
CREATE TABLE IF NOT EXISTS specification (
    id integer PRIMARY KEY,
    name text NOT NULL,
    spec jsonb NOT NULL,
    sha256 text NOT NULL UNIQUE,
    created_on timestamp NOT NULL
);
CREATE TABLE IF NOT EXISTS environment (
    id integer PRIMARY KEY,
    namespace_id integer NOT NULL REFERENCES namespace(id),
    name text NOT NULL,
    description text,
    current_build_id bigint,
    deleted_on timestamp,
    UNIQUE (namespace_id, name)
);
CREATE TABLE IF NOT EXISTS build (
    id bigint PRIMARY KEY,  -- allocated before submission (release 0.1.0: its stream sequence)
    submission_sequence bigint NOT NULL,  -- the stream sequence of its build.submitted event
    environment_id integer NOT NULL REFERENCES environment(id),
    specification_id integer NOT NULL REFERENCES specification(id),
    status text NOT NULL,
    status_info text,
    size bigint NOT NULL DEFAULT 0,
    package_count integer,
    build_key text NOT NULL,
    build_key_version integer NOT NULL,
    platforms jsonb NOT NULL,
    artifacts_wanted jsonb NOT NULL,
    scheduled_on timestamp NOT NULL,
    started_on timestamp,
    ended_on timestamp,
    deleted_on timestamp,
    kept_artifacts jsonb,  -- what a deletion of this build keeps (null: nothing)
    lock_digest text,  -- the lock blob (build.solved): diffs, SBOMs and rehydration read it
    specification_blob_digest text,  -- a specification too large for its event (build.submitted)
    -- Archive and rehydration (build.archive_requested, build.archived, build.rehydration_requested,
    -- build.rehydrated): archived_on is set while the build is archived.
    archive_generation integer NOT NULL DEFAULT 0,
    archived_on timestamp,
    archived_kinds jsonb,
    archive_freed_on timestamp,
    rehydration_attempt integer NOT NULL DEFAULT 0,  -- of this archive's rehydration (a failed one is asked again)
    rehydration_state text,  -- null, REHYDRATING or FAILED
    rehydration_info text,
    rehydration_seconds double precision
);
CREATE INDEX IF NOT EXISTS build_environment ON build(environment_id);
-- The solver's queue: a queued build's position is counted on it (as long as the queue, not the history).
CREATE INDEX IF NOT EXISTS build_queue ON build(submission_sequence) WHERE status = 'QUEUED';
CREATE TABLE IF NOT EXISTS build_artifact (
    id integer PRIMARY KEY,
    build_id bigint NOT NULL REFERENCES build(id),
    artifact_type text NOT NULL,
    key text NOT NULL,
    digest text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    platform text NOT NULL DEFAULT '',  -- the conda platform it is for ('' for none)
    UNIQUE (build_id, artifact_type)
);
-- A multi-platform build's artifacts for its further platforms (its main ones are build_artifact's).
CREATE TABLE IF NOT EXISTS build_platform_artifact (
    build_id bigint NOT NULL REFERENCES build(id),
    artifact_type text NOT NULL,
    platform text NOT NULL,
    key text NOT NULL,
    digest text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    PRIMARY KEY (build_id, artifact_type, platform)
);
CREATE TABLE IF NOT EXISTS build_progress (
    sequence bigint PRIMARY KEY,
    build_id bigint NOT NULL,
    phase text NOT NULL,
    state text NOT NULL,
    message text NOT NULL,
    duration_seconds double precision,
    service text NOT NULL,
    occurred_on timestamp NOT NULL
);
CREATE INDEX IF NOT EXISTS build_progress_build ON build_progress(build_id, sequence);
CREATE TABLE IF NOT EXISTS namespace_role_mapping (
    id integer PRIMARY KEY,
    namespace_id integer NOT NULL REFERENCES namespace(id),
    entity text NOT NULL,
    role text NOT NULL
);
CREATE TABLE IF NOT EXISTS namespace_role_mapping_v2 (
    id integer PRIMARY KEY,
    namespace_id integer NOT NULL REFERENCES namespace(id),
    other_namespace_id integer NOT NULL REFERENCES namespace(id),
    role text NOT NULL,
    UNIQUE (namespace_id, other_namespace_id)
);
CREATE TABLE IF NOT EXISTS conda_channel (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    last_update timestamp
);
CREATE TABLE IF NOT EXISTS conda_package (
    id integer PRIMARY KEY,
    channel_id integer NOT NULL REFERENCES conda_channel(id),
    name text NOT NULL,
    version text NOT NULL,
    license text,
    summary text,
    UNIQUE (channel_id, name, version)
);
CREATE TABLE IF NOT EXISTS conda_package_build (
    id integer PRIMARY KEY,
    package_id integer NOT NULL REFERENCES conda_package(id),
    channel_id integer NOT NULL REFERENCES conda_channel(id),
    build text NOT NULL,
    build_number integer NOT NULL,
    depends jsonb NOT NULL,
    constrains jsonb NOT NULL,
    md5 text,
    sha256 text,
    size bigint,
    subdir text NOT NULL,
    timestamp bigint,
    UNIQUE (package_id, subdir, build)
);
CREATE TABLE IF NOT EXISTS build_package (
    build_id bigint NOT NULL REFERENCES build(id),
    package_build_id integer NOT NULL REFERENCES conda_package_build(id),
    PRIMARY KEY (build_id, package_build_id)
);
CREATE TABLE IF NOT EXISTS setting_override (
    scope text PRIMARY KEY,  -- '' (global), 'namespace' or 'namespace/environment'
    data jsonb NOT NULL
);
-- Webhooks (their secrets live only, encrypted, in the event stream) and their delivery log.
CREATE TABLE IF NOT EXISTS webhook (
    id bigint PRIMARY KEY,  -- allocated before registration (release 0.1.0: its stream sequence)
    registered_sequence bigint NOT NULL,  -- the stream sequence of its webhook.registered event
    url text NOT NULL,
    namespace text,
    environment text,
    build_id bigint,
    event_types jsonb NOT NULL,
    description text NOT NULL,
    registered_by text NOT NULL,
    created_on timestamp NOT NULL,
    updated_on timestamp,
    secret_changed_on timestamp,
    deleted_on timestamp,
    last_event_id bigint,
    last_attempt integer,
    last_succeeded boolean,
    last_status_code integer,
    last_error text,
    last_attempt_on timestamp,
    delivered_count bigint NOT NULL DEFAULT 0,
    failed_count bigint NOT NULL DEFAULT 0  -- events given up on
);
CREATE TABLE IF NOT EXISTS webhook_delivery_attempt (
    sequence bigint PRIMARY KEY,  -- the stream sequence of its webhook.delivery_attempted event
    webhook_id bigint NOT NULL,
    event_id bigint NOT NULL,  -- the stream sequence of the event delivered
    event_type text NOT NULL,
    attempt integer NOT NULL,
    succeeded boolean NOT NULL,
    status_code integer,
    error text NOT NULL,
    duration_seconds double precision NOT NULL,
    final boolean NOT NULL,
    retry_in_seconds double precision,
    attempted_on timestamp NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_delivery_attempt_webhook ON webhook_delivery_attempt(webhook_id, sequence);
CREATE INDEX IF NOT EXISTS webhook_delivery_attempt_event ON webhook_delivery_attempt(webhook_id, event_id);
-- How each build was used (build.used events, batched): image pulls, artifact downloads, activations.
CREATE TABLE IF NOT EXISTS build_usage (
    build_id bigint PRIMARY KEY,
    pulls bigint NOT NULL,
    downloads bigint NOT NULL,
    activations bigint NOT NULL,
    first_used_at timestamp NOT NULL,
    last_used_at timestamp NOT NULL
);
-- The audit trail: one row per command event (services/api/audit/projection.py).
CREATE TABLE IF NOT EXISTS audit_event (
    sequence bigint PRIMARY KEY,  -- the event's stream sequence: its order, and the cursor
    occurred_at timestamp NOT NULL,
    principal text NOT NULL,  -- who caused it, as the API authenticated them
    event_type text NOT NULL,
    namespace text,
    environment text,
    build_id bigint,
    details jsonb NOT NULL  -- the event's fields, without specifications and secrets
);
CREATE INDEX IF NOT EXISTS audit_event_scope ON audit_event(namespace, environment, sequence);
CREATE INDEX IF NOT EXISTS audit_event_principal ON audit_event(principal, sequence);
CREATE INDEX IF NOT EXISTS audit_event_time ON audit_event(occurred_at);
