-- The leaderboard's tables. Portable between SQLite and PostgreSQL (sqlx's Any driver runs
-- the same statements on both): TEXT, BIGINT, DOUBLE PRECISION only; booleans are 0/1;
-- times are Unix milliseconds; ids are made by the server.
CREATE TABLE cohorts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- The verification workload's seed: the instructor's, never shown to students.
    hidden_seed BIGINT NOT NULL,
    daily_limit BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE students (
    cohort TEXT NOT NULL REFERENCES cohorts(id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    PRIMARY KEY (cohort, id)
);
-- Tokens are stored as their sha256 (hex); the token itself is shown once.
CREATE TABLE tokens (
    sha256 TEXT PRIMARY KEY,
    cohort TEXT NOT NULL REFERENCES cohorts(id),
    -- '' for the cohort's instructor
    student TEXT NOT NULL,
    revoked BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX tokens_holder ON tokens (cohort, student);
CREATE TABLE labs (
    cohort TEXT NOT NULL REFERENCES cohorts(id),
    lab BIGINT NOT NULL,
    opens_ms BIGINT NOT NULL,
    closes_ms BIGINT NOT NULL,
    -- the grading rule as JSON
    grading TEXT NOT NULL,
    PRIMARY KEY (cohort, lab)
);
-- Accepted submissions only: a refused bundle is never stored here.
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    cohort TEXT NOT NULL,
    student TEXT NOT NULL,
    lab BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- the ratio recomputed by the server from the figures (NULL: a lab that only has to finish)
    ratio DOUBLE PRECISION,
    low DOUBLE PRECISION,
    high DOUBLE PRECISION,
    change_sha256 TEXT NOT NULL,
    -- the student's change itself (answer lines or slot code), for verification
    change_text TEXT NOT NULL,
    cpu_model TEXT NOT NULL,
    cores BIGINT NOT NULL,
    -- the bundle as received (JSON)
    bundle TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    UNIQUE (cohort, student, idempotency_key),
    FOREIGN KEY (cohort, student) REFERENCES students(cohort, id)
);
CREATE INDEX submissions_board ON submissions (cohort, lab);
CREATE INDEX submissions_student ON submissions (cohort, student);
-- The instructor's re-run of a submission on their machine, on the cohort's hidden seed.
CREATE TABLE verifications (
    submission TEXT PRIMARY KEY REFERENCES submissions(id),
    passed BIGINT NOT NULL,
    ratio DOUBLE PRECISION,
    low DOUBLE PRECISION,
    high DOUBLE PRECISION,
    agrees BIGINT NOT NULL,
    machine TEXT NOT NULL,
    verified_ms BIGINT NOT NULL
);
-- Every upload that reached validation, accepted or refused (with the reason): what the daily
-- limit counts and what "stuck" (no pass after N tries) is computed from.
CREATE TABLE attempts (
    cohort TEXT NOT NULL,
    student TEXT NOT NULL,
    lab BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    accepted BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX attempts_student_lab ON attempts (cohort, student, lab, at_ms);
