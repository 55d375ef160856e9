//! The database: SQLite (a file under the data directory) or PostgreSQL, through sqlx's Any
//! driver, so that every statement here runs unchanged on both (the tests run the same suite
//! against each). Migrations are embedded in the binary and run at start.

use observatory_leaderboard::Tier;
use observatory_leaderboard::copies::Digests;
use observatory_stats::Better;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

/// Database errors, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, DbError>;

fn migrator() -> Migrator {
    let step = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_string().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        step(1, "cohorts", include_str!("../migrations/0001_cohorts.sql")),
        step(2, "copies", include_str!("../migrations/0002_copies.sql")),
        step(3, "bests", include_str!("../migrations/0003_bests.sql")),
    ])
}

/// A cohort.
#[derive(Clone, Debug, PartialEq)]
pub struct CohortRow {
    pub id: String,
    pub name: String,
    pub hidden_seed: i64,
    pub daily_limit: i64,
}

/// A student on a cohort's roster.
#[derive(Clone, Debug, PartialEq)]
pub struct StudentRow {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// A lab opened in a cohort.
#[derive(Clone, Debug, PartialEq)]
pub struct LabRow {
    pub lab: i64,
    pub opens_ms: i64,
    pub closes_ms: i64,
    pub grading: String,
}

/// Who holds a token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRow {
    pub cohort: String,
    /// Empty for the cohort's instructor.
    pub student: String,
    pub revoked: bool,
}

/// An accepted submission (and its verification, if any).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionRow {
    pub id: String,
    pub cohort: String,
    pub student: String,
    pub lab: i64,
    pub idempotency_key: String,
    pub ratio: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub change_sha256: String,
    pub cpu_model: String,
    pub cores: i64,
    pub received_ms: i64,
    pub verification: Option<VerificationRow>,
}

/// The instructor's re-run of a submission.
#[derive(Clone, Debug, PartialEq)]
pub struct VerificationRow {
    pub passed: bool,
    pub ratio: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub agrees: bool,
    pub machine: String,
    pub verified_ms: i64,
}

/// One upload that reached validation.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRow {
    pub student: String,
    pub lab: i64,
    pub at_ms: i64,
    pub accepted: bool,
    pub reason: String,
}

/// A new submission.
#[derive(Clone, Debug)]
pub struct NewSubmission<'a> {
    pub id: &'a str,
    pub cohort: &'a str,
    pub student: &'a str,
    pub lab: i64,
    pub idempotency_key: &'a str,
    pub ratio: Option<(f64, f64, f64)>,
    pub change_sha256: &'a str,
    pub change_text: &'a str,
    pub cpu_model: &'a str,
    pub cores: i64,
    pub bundle: &'a str,
    pub received_ms: i64,
    /// What it is compared with other students' submissions by.
    pub digests: &'a Digests,
    /// How the lab ranks (which ratio is a student's best).
    pub better: Better,
}

/// A tier's name in the `bests` table (serde's).
fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::SelfReported => "self_reported",
        Tier::Verified => "verified",
    }
}

/// `ASC` when lower is better.
fn order(better: Better) -> &'static str {
    match better {
        Better::Lower => "ASC",
        Better::Higher => "DESC",
    }
}

/// Another student's submission whose figures match a digest (what a copy is refused by).
#[derive(Clone, Debug, PartialEq)]
pub struct DigestRow {
    pub digest: String,
    pub cohort: String,
    pub student: String,
    pub lab: i64,
    pub submission: String,
    pub change_norm: String,
    pub counts: i64,
}

/// The accepted attempt stored with each submission.
const ACCEPTED: &str = "";

/// The prefix of a refused attempt's reason when the bundle was another student's.
pub const COPY_REASON: &str = "copy: ";

/// The connection pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// Which engine (`sqlite` or `postgres`), for the log and the tests.
    pub engine: &'static str,
}

/// Submissions with their verifications, then a filter.
macro_rules! submissions_where {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.cohort, s.student, s.lab, s.idempotency_key, s.ratio, s.low, s.high, s.change_sha256, s.cpu_model, s.cores, s.received_ms, ",
            "v.passed, v.ratio, v.low, v.high, v.agrees, v.machine, v.verified_ms ",
            "FROM submissions s LEFT JOIN verifications v ON v.submission = s.id ",
            $tail
        )
    };
}

/// Which submissions to read.
#[derive(Clone, Copy, Debug)]
enum Which<'a> {
    Cohort,
    Lab(i64),
    Student(&'a str),
    Id(&'a str),
}

fn submission_of(row: &sqlx::any::AnyRow) -> std::result::Result<SubmissionRow, sqlx::Error> {
    use sqlx::Row;
    let verification = match (
        row.try_get::<Option<i64>, _>(12)?,
        row.try_get::<Option<i64>, _>(16)?,
        row.try_get::<Option<String>, _>(17)?,
        row.try_get::<Option<i64>, _>(18)?,
    ) {
        (Some(passed), Some(agrees), Some(machine), Some(verified_ms)) => Some(VerificationRow {
            passed: passed != 0,
            ratio: row.try_get(13)?,
            low: row.try_get(14)?,
            high: row.try_get(15)?,
            agrees: agrees != 0,
            machine,
            verified_ms,
        }),
        _ => None,
    };
    Ok(SubmissionRow {
        id: row.try_get(0)?,
        cohort: row.try_get(1)?,
        student: row.try_get(2)?,
        lab: row.try_get(3)?,
        idempotency_key: row.try_get(4)?,
        ratio: row.try_get(5)?,
        low: row.try_get(6)?,
        high: row.try_get(7)?,
        change_sha256: row.try_get(8)?,
        cpu_model: row.try_get(9)?,
        cores: row.try_get(10)?,
        received_ms: row.try_get(11)?,
        verification,
    })
}

impl Db {
    /// Connect to `url` (`sqlite://FILE?mode=rwc` or `postgres://...`) and run the
    /// migrations.
    pub async fn open(url: &str) -> Result<Db> {
        install_default_drivers();
        let engine = if url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == "sqlite" { 4 } else { 8 })
            .connect(url)
            .await
            .map_err(|source| DbError::Connect {
                url: redact(url),
                source,
            })?;
        if engine == "sqlite" {
            // Readers do not wait for the writer (the board is read far more than written).
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrator().run(&pool).await?;
        Ok(Db { pool, engine })
    }

    pub async fn create_cohort(
        &self,
        cohort: &CohortRow,
        instructor_token_sha256: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM cohorts WHERE id = $1")
            .bind(&cohort.id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO cohorts (id, name, hidden_seed, daily_limit, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&cohort.id)
        .bind(&cohort.name)
        .bind(cohort.hidden_seed)
        .bind(cohort.daily_limit)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tokens (sha256, cohort, student, revoked, created_ms) VALUES ($1, $2, '', 0, $3)",
        )
        .bind(instructor_token_sha256)
        .bind(&cohort.id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn cohort(&self, id: &str) -> Result<Option<CohortRow>> {
        let row: Option<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, name, hidden_seed, daily_limit FROM cohorts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, name, hidden_seed, daily_limit)| CohortRow {
            id,
            name,
            hidden_seed,
            daily_limit,
        }))
    }

    pub async fn token(&self, sha256: &str) -> Result<Option<TokenRow>> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT cohort, student, revoked FROM tokens WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(cohort, student, revoked)| TokenRow {
            cohort,
            student,
            revoked: revoked != 0,
        }))
    }

    /// Add the students not yet on the roster, each with their token's digest; returns the
    /// ids added (a student already on the roster keeps their token).
    pub async fn add_students(
        &self,
        cohort: &str,
        students: &[(StudentRow, String)],
        now_ms: i64,
    ) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut added = Vec::new();
        for (s, token_sha256) in students {
            let exists: Option<(String,)> =
                sqlx::query_as("SELECT id FROM students WHERE cohort = $1 AND id = $2")
                    .bind(cohort)
                    .bind(&s.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                continue;
            }
            sqlx::query("INSERT INTO students (cohort, id, name, email) VALUES ($1, $2, $3, $4)")
                .bind(cohort)
                .bind(&s.id)
                .bind(&s.name)
                .bind(&s.email)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tokens (sha256, cohort, student, revoked, created_ms) VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(token_sha256)
            .bind(cohort)
            .bind(&s.id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            added.push(s.id.clone());
        }
        tx.commit().await?;
        Ok(added)
    }

    pub async fn students(&self, cohort: &str) -> Result<Vec<StudentRow>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, name, email FROM students WHERE cohort = $1 ORDER BY id")
                .bind(cohort)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, email)| StudentRow { id, name, email })
            .collect())
    }

    pub async fn student(&self, cohort: &str, id: &str) -> Result<Option<StudentRow>> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT id, name, email FROM students WHERE cohort = $1 AND id = $2")
                .bind(cohort)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, name, email)| StudentRow { id, name, email }))
    }

    /// Revoke every token of a student; with `new_token_sha256`, issue a new one (rotation).
    pub async fn revoke(
        &self,
        cohort: &str,
        student: &str,
        new_token_sha256: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE cohort = $1 AND student = $2")
            .bind(cohort)
            .bind(student)
            .execute(&mut *tx)
            .await?;
        if let Some(sha) = new_token_sha256 {
            sqlx::query(
                "INSERT INTO tokens (sha256, cohort, student, revoked, created_ms) VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(sha)
            .bind(cohort)
            .bind(student)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_lab(&self, cohort: &str, lab: &LabRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO labs (cohort, lab, opens_ms, closes_ms, grading) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cohort, lab) DO UPDATE SET opens_ms = excluded.opens_ms, closes_ms = excluded.closes_ms, grading = excluded.grading",
        )
        .bind(cohort)
        .bind(lab.lab)
        .bind(lab.opens_ms)
        .bind(lab.closes_ms)
        .bind(&lab.grading)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn labs(&self, cohort: &str) -> Result<Vec<LabRow>> {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "SELECT lab, opens_ms, closes_ms, grading FROM labs WHERE cohort = $1 ORDER BY lab",
        )
        .bind(cohort)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(lab, opens_ms, closes_ms, grading)| LabRow {
                lab,
                opens_ms,
                closes_ms,
                grading,
            })
            .collect())
    }

    pub async fn record_attempt(
        &self,
        cohort: &str,
        student: &str,
        lab: i64,
        at_ms: i64,
        accepted: bool,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO attempts (cohort, student, lab, at_ms, accepted, reason) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(cohort)
        .bind(student)
        .bind(lab)
        .bind(at_ms)
        .bind(i64::from(accepted))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uploads of `student` to `lab` since `since_ms` (what the daily limit counts).
    pub async fn attempts_since(
        &self,
        cohort: &str,
        student: &str,
        lab: i64,
        since_ms: i64,
    ) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM attempts WHERE cohort = $1 AND student = $2 AND lab = $3 AND at_ms >= $4",
        )
        .bind(cohort)
        .bind(student)
        .bind(lab)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    pub async fn attempts(&self, cohort: &str) -> Result<Vec<AttemptRow>> {
        let rows: Vec<(String, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT student, lab, at_ms, accepted, reason FROM attempts WHERE cohort = $1 ORDER BY at_ms",
        )
        .bind(cohort)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(student, lab, at_ms, accepted, reason)| AttemptRow {
                student,
                lab,
                at_ms,
                accepted: accepted != 0,
                reason,
            })
            .collect())
    }

    /// The id of the submission `student` made with `key`, if any (a retried upload).
    pub async fn submission_with_key(
        &self,
        cohort: &str,
        student: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM submissions WHERE cohort = $1 AND student = $2 AND idempotency_key = $3",
        )
        .bind(cohort)
        .bind(student)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Store a submission and its accepted attempt, in one transaction (a crash between the
    /// two would leave an upload the daily limit does not count); `false` when one with the
    /// same idempotency key exists (a retry that raced the first upload): then nothing is
    /// stored.
    pub async fn insert_submission(&self, s: &NewSubmission<'_>) -> Result<bool> {
        let (ratio, low, high) = match s.ratio {
            Some((r, l, h)) => (Some(r), Some(l), Some(h)),
            None => (None, None, None),
        };
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO submissions (id, cohort, student, lab, idempotency_key, ratio, low, high, change_sha256, change_text, cpu_model, cores, bundle, received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (cohort, student, idempotency_key) DO NOTHING",
        )
        .bind(s.id)
        .bind(s.cohort)
        .bind(s.student)
        .bind(s.lab)
        .bind(s.idempotency_key)
        .bind(ratio)
        .bind(low)
        .bind(high)
        .bind(s.change_sha256)
        .bind(s.change_text)
        .bind(s.cpu_model)
        .bind(s.cores)
        .bind(s.bundle)
        .bind(s.received_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO attempts (cohort, student, lab, at_ms, accepted, reason) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.cohort)
        .bind(s.student)
        .bind(s.lab)
        .bind(s.received_ms)
        .bind(1_i64)
        .bind(ACCEPTED)
        .execute(&mut *tx)
        .await?;
        // The student's best self-reported entry: replaced only by a strictly better ratio (a
        // lab without one keeps the first), so the cost does not grow with the uploads.
        let sql = match s.better {
            Better::Lower => {
                "INSERT INTO bests (cohort, lab, tier, student, submission, ratio) VALUES ($1, $2, 'self_reported', $3, $4, $5) \
                 ON CONFLICT (cohort, lab, tier, student) DO UPDATE SET submission = excluded.submission, ratio = excluded.ratio \
                 WHERE excluded.ratio < bests.ratio"
            }
            Better::Higher => {
                "INSERT INTO bests (cohort, lab, tier, student, submission, ratio) VALUES ($1, $2, 'self_reported', $3, $4, $5) \
                 ON CONFLICT (cohort, lab, tier, student) DO UPDATE SET submission = excluded.submission, ratio = excluded.ratio \
                 WHERE excluded.ratio > bests.ratio"
            }
        };
        sqlx::query(sql)
            .bind(s.cohort)
            .bind(s.lab)
            .bind(s.student)
            .bind(s.id)
            .bind(ratio)
            .execute(&mut *tx)
            .await?;
        for (digest, _) in s.digests.all() {
            sqlx::query(
                "INSERT INTO figure_digests (digest, cohort, student, lab, submission, change_norm, counts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest, cohort, student) DO NOTHING",
            )
            .bind(digest)
            .bind(s.cohort)
            .bind(s.student)
            .bind(s.lab)
            .bind(s.id)
            .bind(&s.digests.change)
            .bind(i64::from(s.digests.counts))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Rebuild every best entry from the submissions (at start: a database written before the
    /// `bests` table, or by another version, is made consistent). `labs`: how each lab ranks.
    pub async fn rebuild_bests(&self, labs: &[(i64, Better)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bests").execute(&mut *tx).await?;
        for (lab, better) in labs {
            let self_reported = format!(
                "INSERT INTO bests (cohort, lab, tier, student, submission, ratio) \
                 SELECT cohort, lab, 'self_reported', student, id, ratio FROM ( \
                 SELECT s.cohort, s.lab, s.student, s.id, s.ratio, ROW_NUMBER() OVER ( \
                 PARTITION BY s.cohort, s.student ORDER BY s.ratio {}, s.received_ms, s.id) AS n \
                 FROM submissions s WHERE s.lab = $1) t WHERE n = 1",
                order(*better)
            );
            let verified = format!(
                "INSERT INTO bests (cohort, lab, tier, student, submission, ratio) \
                 SELECT cohort, lab, 'verified', student, id, ratio FROM ( \
                 SELECT s.cohort, s.lab, s.student, s.id, v.ratio, ROW_NUMBER() OVER ( \
                 PARTITION BY s.cohort, s.student ORDER BY v.ratio {}, s.received_ms, s.id) AS n \
                 FROM submissions s JOIN verifications v ON v.submission = s.id \
                 WHERE s.lab = $1 AND v.passed = 1) t WHERE n = 1",
                order(*better)
            );
            for sql in [self_reported, verified] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(lab)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A board's rows: each student's best entry of `tier` on `lab` (one row per student).
    pub async fn board_rows(
        &self,
        cohort: &str,
        lab: i64,
        tier: Tier,
    ) -> Result<Vec<SubmissionRow>> {
        let rows = sqlx::query(submissions_where!(
            "JOIN bests b ON b.submission = s.id \
             WHERE b.cohort = $1 AND b.lab = $2 AND b.tier = $3 ORDER BY s.received_ms, s.id"
        ))
        .bind(cohort.to_string())
        .bind(lab)
        .bind(tier_name(tier))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(submission_of)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Other students' (any cohort's) digests among `digests`: at most one row per digest
    /// and student, so the lookup does not grow with anybody's uploads.
    pub async fn digests_of_others(
        &self,
        cohort: &str,
        student: &str,
        digests: &[&str],
    ) -> Result<Vec<DigestRow>> {
        let mut out = Vec::new();
        for d in digests {
            let rows: Vec<(String, String, String, i64, String, String, i64)> = sqlx::query_as(
                "SELECT digest, cohort, student, lab, submission, change_norm, counts FROM figure_digests \
                 WHERE digest = $1 AND NOT (cohort = $2 AND student = $3) ORDER BY cohort, student LIMIT 20",
            )
            .bind(*d)
            .bind(cohort)
            .bind(student)
            .fetch_all(&self.pool)
            .await?;
            out.extend(rows.into_iter().map(
                |(digest, cohort, student, lab, submission, change_norm, counts)| DigestRow {
                    digest,
                    cohort,
                    student,
                    lab,
                    submission,
                    change_norm,
                    counts,
                },
            ));
        }
        Ok(out)
    }

    /// The bundle and change stored under a student's idempotency key.
    pub async fn stored_upload(&self, id: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT bundle, change_text FROM submissions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Each student's latest change to each lab: (lab, student, submission, change).
    pub async fn latest_changes(&self, cohort: &str) -> Result<Vec<(i64, String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT lab, student, id, change_text FROM ( \
             SELECT s.lab, s.student, s.id, s.change_text, ROW_NUMBER() OVER ( \
             PARTITION BY s.lab, s.student ORDER BY s.received_ms DESC, s.id DESC) AS n \
             FROM submissions s WHERE s.cohort = $1) t WHERE n = 1 ORDER BY lab, student, id",
        )
        .bind(cohort)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn read_submissions(&self, cohort: &str, which: Which<'_>) -> Result<Vec<SubmissionRow>> {
        let q = match which {
            Which::Cohort => sqlx::query(submissions_where!(
                "WHERE s.cohort = $1 ORDER BY s.received_ms, s.id"
            ))
            .bind(cohort.to_string()),
            Which::Lab(lab) => sqlx::query(submissions_where!(
                "WHERE s.cohort = $1 AND s.lab = $2 ORDER BY s.received_ms, s.id"
            ))
            .bind(cohort.to_string())
            .bind(lab),
            Which::Student(student) => sqlx::query(submissions_where!(
                "WHERE s.cohort = $1 AND s.student = $2 ORDER BY s.received_ms, s.id"
            ))
            .bind(cohort.to_string())
            .bind(student.to_string()),
            Which::Id(id) => sqlx::query(submissions_where!("WHERE s.cohort = $1 AND s.id = $2"))
                .bind(cohort.to_string())
                .bind(id.to_string()),
        };
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(submission_of)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn submissions(&self, cohort: &str) -> Result<Vec<SubmissionRow>> {
        self.read_submissions(cohort, Which::Cohort).await
    }

    pub async fn submissions_of_lab(&self, cohort: &str, lab: i64) -> Result<Vec<SubmissionRow>> {
        self.read_submissions(cohort, Which::Lab(lab)).await
    }

    pub async fn submissions_of_student(
        &self,
        cohort: &str,
        student: &str,
    ) -> Result<Vec<SubmissionRow>> {
        self.read_submissions(cohort, Which::Student(student)).await
    }

    /// A submission with its bundle and change text.
    pub async fn submission(
        &self,
        cohort: &str,
        id: &str,
    ) -> Result<Option<(SubmissionRow, String, String)>> {
        let Some(row) = self
            .read_submissions(cohort, Which::Id(id))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let (bundle, change): (String, String) =
            sqlx::query_as("SELECT bundle, change_text FROM submissions WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(Some((row, bundle, change)))
    }

    /// Store the re-run of `sub` (replacing an earlier one), and the student's best verified
    /// entry on the lab with it, in one transaction. A verification can turn a pass into a
    /// fail, so the best is recomputed from the student's own verified entries on the lab.
    pub async fn set_verification(
        &self,
        sub: &SubmissionRow,
        v: &VerificationRow,
        better: Better,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO verifications (submission, passed, ratio, low, high, agrees, machine, verified_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (submission) DO UPDATE SET passed = excluded.passed, ratio = excluded.ratio, low = excluded.low, high = excluded.high, agrees = excluded.agrees, machine = excluded.machine, verified_ms = excluded.verified_ms",
        )
        .bind(&sub.id)
        .bind(i64::from(v.passed))
        .bind(v.ratio)
        .bind(v.low)
        .bind(v.high)
        .bind(i64::from(v.agrees))
        .bind(&v.machine)
        .bind(v.verified_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM bests WHERE cohort = $1 AND lab = $2 AND tier = 'verified' AND student = $3",
        )
        .bind(&sub.cohort)
        .bind(sub.lab)
        .bind(&sub.student)
        .execute(&mut *tx)
        .await?;
        let best = format!(
            "INSERT INTO bests (cohort, lab, tier, student, submission, ratio) \
             SELECT s.cohort, s.lab, 'verified', s.student, s.id, v.ratio \
             FROM submissions s JOIN verifications v ON v.submission = s.id \
             WHERE s.cohort = $1 AND s.lab = $2 AND s.student = $3 AND v.passed = 1 \
             ORDER BY v.ratio {}, s.received_ms, s.id LIMIT 1",
            order(better)
        );
        sqlx::query(sqlx::AssertSqlSafe(best))
            .bind(&sub.cohort)
            .bind(sub.lab)
            .bind(&sub.student)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rows in a table (the tests' proof that a refused upload stored nothing).
    pub async fn count(&self, table: Table) -> Result<i64> {
        let sql = match table {
            Table::Submissions => "SELECT COUNT(*) FROM submissions",
            Table::Students => "SELECT COUNT(*) FROM students",
            Table::Attempts => "SELECT COUNT(*) FROM attempts",
        };
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(n)
    }
}

/// The tables [`Db::count`] counts.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    Submissions,
    Students,
    Attempts,
}

/// The password in a database URL, hidden for the log.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite database in `dir` holding cohort `c` (instructor token digest `00`).
    async fn with_cohort(dir: &std::path::Path) -> Db {
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        let cohort = CohortRow {
            id: "c".into(),
            name: "C".into(),
            hidden_seed: 1,
            daily_limit: 6,
        };
        assert!(db.create_cohort(&cohort, "00", 0).await.unwrap());
        db
    }

    #[tokio::test]
    async fn a_submission_and_its_attempt_are_stored_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_cohort(dir.path()).await;
        let ada = StudentRow {
            id: "ada".into(),
            name: String::new(),
            email: String::new(),
        };
        db.add_students("c", &[(ada, "11".into())], 0)
            .await
            .unwrap();
        let digests = Digests::default();
        let sub = |id: &'static str, key: &'static str| NewSubmission {
            id,
            cohort: "c",
            student: "ada",
            lab: 9,
            idempotency_key: key,
            ratio: Some((0.5, 0.4, 0.6)),
            change_sha256: "",
            change_text: "",
            cpu_model: "m",
            cores: 2,
            bundle: "{}",
            received_ms: 1,
            digests: &digests,
            better: Better::Lower,
        };
        assert!(db.insert_submission(&sub("s1", "k1")).await.unwrap());
        assert!(
            !db.insert_submission(&sub("s2", "k1")).await.unwrap(),
            "the same key"
        );
        assert_eq!(db.count(Table::Submissions).await.unwrap(), 1);
        assert_eq!(
            db.count(Table::Attempts).await.unwrap(),
            1,
            "one attempt per stored upload"
        );
        assert_eq!(db.attempts_since("c", "ada", 9, 0).await.unwrap(), 1);
        // The attempt cannot be written (as a full disk would refuse it): the submission is
        // not stored either, so the daily limit never undercounts.
        sqlx::query(
            "CREATE TRIGGER no_attempts BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        assert!(db.insert_submission(&sub("s3", "k3")).await.is_err());
        assert_eq!(db.count(Table::Submissions).await.unwrap(), 1);
        assert_eq!(db.count(Table::Attempts).await.unwrap(), 1);
    }

    /// The board from the kept best entries is the board from the whole history, in both
    /// tiers and both directions, after uploads, verifications that pass, fail and change
    /// their minds, and a restart's rebuild.
    #[tokio::test]
    async fn the_kept_best_entries_make_the_board_the_whole_history_makes() {
        use crate::LabInfo;
        use observatory_leaderboard::LabRule;
        for better in [Better::Lower, Better::Higher] {
            let dir = tempfile::tempdir().unwrap();
            let db = with_cohort(dir.path()).await;
            let students: Vec<(StudentRow, String)> = (0..12)
                .map(|i| {
                    let s = StudentRow {
                        id: format!("s{i:02}"),
                        name: String::new(),
                        email: String::new(),
                    };
                    (s, format!("t{i:02}"))
                })
                .collect();
            db.add_students("c", &students, 0).await.unwrap();
            let info = LabInfo {
                rule: LabRule {
                    lab: 9,
                    metric: "m".into(),
                    better,
                    min_effect: 0.1,
                    completes: false,
                },
                title: "t".into(),
                code: true,
            };
            let digests = Digests::default();
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64
            };
            let same = |a: &crate::wire::BoardView, b: &crate::wire::BoardView| {
                let rows = |v: &crate::wire::BoardView| -> Vec<(String, String, u32, u32)> {
                    v.rows
                        .iter()
                        .map(|r| (r.student.clone(), r.submission.clone(), r.place, r.band))
                        .collect()
                };
                assert_eq!(rows(a), rows(b), "{better:?}");
            };
            for step in 0..300 {
                let student = format!("s{:02}", (next() * 12.0) as usize);
                let id = format!("x{step:03}");
                let key = format!("k{step:03}");
                // Coarse ratios, so equal ones happen.
                let r = 0.2 + (next() * 30.0).floor() / 50.0;
                db.insert_submission(&NewSubmission {
                    id: &id,
                    cohort: "c",
                    student: &student,
                    lab: 9,
                    idempotency_key: &key,
                    ratio: Some((r, r * 0.95, r * 1.05)),
                    change_sha256: "",
                    change_text: "",
                    cpu_model: "m",
                    cores: 2,
                    bundle: "{}",
                    received_ms: step,
                    digests: &digests,
                    better,
                })
                .await
                .unwrap();
                if next() < 0.4 {
                    // Verify a random earlier submission: pass or fail, sometimes again.
                    let pick = format!("x{:03}", (next() * (step + 1) as f64) as i64);
                    let (sub, _, _) = db.submission("c", &pick).await.unwrap().unwrap();
                    let v = (0.2 + (next() * 30.0).floor() / 50.0, next() < 0.75);
                    let row = VerificationRow {
                        passed: v.1,
                        ratio: Some(v.0),
                        low: Some(v.0 * 0.97),
                        high: Some(v.0 * 1.03),
                        agrees: true,
                        machine: "i".into(),
                        verified_ms: step,
                    };
                    db.set_verification(&sub, &row, better).await.unwrap();
                }
                if step % 50 == 49 {
                    let all = db.submissions_of_lab("c", 9).await.unwrap();
                    for tier in [Tier::SelfReported, Tier::Verified] {
                        let kept = db.board_rows("c", 9, tier).await.unwrap();
                        assert!(kept.len() <= 12);
                        let a = crate::views::board("c", &info, &all, tier).unwrap();
                        let b = crate::views::board("c", &info, &kept, tier).unwrap();
                        same(&a, &b);
                    }
                }
            }
            // A restart rebuilds the same bests.
            db.rebuild_bests(&[(9, better)]).await.unwrap();
            let all = db.submissions_of_lab("c", 9).await.unwrap();
            for tier in [Tier::SelfReported, Tier::Verified] {
                let kept = db.board_rows("c", 9, tier).await.unwrap();
                same(
                    &crate::views::board("c", &info, &all, tier).unwrap(),
                    &crate::views::board("c", &info, &kept, tier).unwrap(),
                );
            }
        }
    }
}
