-- What a submission is compared with other students' by (issue 35): its figures exactly,
-- its wall-clock samples up to a factor, and its change without comments and whitespace
-- (sha256 hex each; '' where a lab has no figures, and on rows stored before this migration).
ALTER TABLE submissions ADD COLUMN figures_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE submissions ADD COLUMN shape_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE submissions ADD COLUMN change_norm_sha256 TEXT NOT NULL DEFAULT '';
-- With the student last: a student's own uploads are skipped by a range, not read one by one.
CREATE INDEX submissions_figures ON submissions (cohort, lab, figures_sha256, student);
CREATE INDEX submissions_shape ON submissions (cohort, lab, shape_sha256, student);
