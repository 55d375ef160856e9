-- Each student's best entry per lab and tier: what a board reads, so that its cost follows the
-- number of students, not the number of uploads (issue 35). The server keeps it at each upload
-- (in the upload's transaction) and verification, and rebuilds it from the submissions at start.
CREATE TABLE bests (
    cohort TEXT NOT NULL,
    lab BIGINT NOT NULL,
    -- 'self_reported' or 'verified'
    tier TEXT NOT NULL,
    student TEXT NOT NULL,
    submission TEXT NOT NULL,
    -- the ratio the entry is ranked by (NULL on a lab that only has to finish: the first stays)
    ratio DOUBLE PRECISION,
    PRIMARY KEY (cohort, lab, tier, student)
);
