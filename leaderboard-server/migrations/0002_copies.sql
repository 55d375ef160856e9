-- What a submission's figures are compared with other students' by (issue 35): digests of
-- the figures exactly and of each side's samples up to order, scale and a nudge (sha256 hex),
-- kept once per student (a student who uploads the same figures again adds no row), and looked
-- up across every lab and cohort.
CREATE TABLE figure_digests (
    digest TEXT NOT NULL,
    cohort TEXT NOT NULL,
    student TEXT NOT NULL,
    lab BIGINT NOT NULL,
    -- the first submission that carried it
    submission TEXT NOT NULL,
    -- the change without comments and whitespace (sha256 hex), and 1 for instruction counts
    -- (two students with the same change share counts honestly)
    change_norm TEXT NOT NULL,
    counts BIGINT NOT NULL,
    PRIMARY KEY (digest, cohort, student)
);
