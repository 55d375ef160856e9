//! What goes over the wire: the JSON API's requests and answers (the OpenAPI document is
//! generated from these), shared by the server, the CLI client and the tests.

use observatory_leaderboard::copies::Alike;
use observatory_leaderboard::{Bundle, GradingRule, Standing, Tier};
use observatory_stats::{Better, RatioInterval};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every refusal and error: a status code and this body.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /api/cohorts` (the server's admin token).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCohort {
    /// 1 to 64 letters, digits, '-', '_' or '.'.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Uploads per student per lab in any 24 hours (default 20).
    #[schema(minimum = 1, maximum = 100000)]
    pub daily_limit: Option<u32>,
}

/// The new cohort and its instructor's token (shown once).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CohortCreated {
    pub cohort: String,
    pub instructor_token: String,
}

/// A token issued to a student (shown once; the server keeps only its sha256).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    pub student: String,
    pub token: String,
}

/// `POST /api/cohorts/{cohort}/roster` (a CSV body: `student,name,email`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RosterImported {
    pub issued: Vec<IssuedToken>,
    /// Students already on the roster: they keep their token (rotate it to issue a new one).
    pub already_on_roster: Vec<String>,
}

/// `PUT /api/cohorts/{cohort}/labs/{lab}`: open a lab (until its deadline) and set its grading.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabSettings {
    /// RFC 3339; default now.
    #[schema(format = DateTime)]
    pub opens_at: Option<String>,
    /// The deadline, RFC 3339: uploads after it are refused.
    #[schema(format = DateTime)]
    pub closes_at: String,
    /// Default: threshold, bonus within 1.05x of the best verified ratio.
    pub grading: Option<GradingRule>,
}

/// `POST /api/cohorts/{cohort}/submissions` (a student's token).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub bundle: Bundle,
    /// The change that was checked (the answer's lines, or the slot's STUDENT code): its
    /// sha256 must be the bundle's `change_sha256`. The instructor's verification re-runs it.
    pub change: String,
}

/// An accepted upload.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub id: String,
    /// The same idempotency key was uploaded before: nothing new was stored.
    pub duplicate: bool,
    /// The ratio the server recomputed from the figures (what the board ranks).
    pub ratio: Option<RatioInterval>,
}

/// One lab of a cohort, for the overview.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LabSummary {
    pub lab: u32,
    pub title: String,
    pub opens_at: String,
    pub closes_at: String,
    pub open: bool,
    /// Students by standing (each student once, where their best submission stands): with an
    /// accepted upload at all; whose re-run passed (what grades count: verified passed and
    /// flagged); not verified yet; flagged; whose re-run failed.
    pub submitted: u32,
    pub passed: u32,
    pub not_verified_yet: u32,
    pub flagged: u32,
    pub verified_failed: u32,
    /// Verified passes over the roster.
    pub pass_rate: f64,
    /// The median of students' best self-reported ratios.
    pub median_ratio: Option<f64>,
}

/// `GET /api/cohorts/{cohort}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    pub cohort: String,
    pub name: String,
    pub students: u32,
    pub labs: Vec<LabSummary>,
}

/// One row of a lab's board.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BoardRow {
    /// In B/A order: 1 + the entries with a strictly better ratio (an exact tie shares it).
    pub place: u32,
    /// The tie band: a run of neighbours whose intervals overlap the run's first entry's
    /// (1: indistinguishable from the leader).
    pub band: u32,
    /// The place of the band's first entry (this row is "≈ #band_leader" when it is not it).
    pub band_leader: u32,
    pub student: String,
    pub submission: String,
    /// `None` on a lab that only has to finish.
    pub ratio: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// The machine the ratio was measured on.
    pub cpu_model: String,
    pub cores: u32,
    /// The verification disagreed with the self-reported result beyond both intervals.
    pub flagged: bool,
    pub submitted_at: String,
}

/// `GET /api/cohorts/{cohort}/labs/{lab}/board`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BoardView {
    pub cohort: String,
    pub lab: u32,
    pub title: String,
    pub tier: Tier,
    pub better: Better,
    pub min_effect: f64,
    /// The bound a passing B/A reaches (`1 - min_effect` or `1 + min_effect`).
    pub bound: f64,
    /// A lab that only has to finish has no ratio to rank: its rows are passes in order of
    /// arrival, all in band 1.
    pub completes: bool,
    pub rows: Vec<BoardRow>,
}

/// The instructor's re-run of a submission, as shown.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifiedView {
    pub passed: bool,
    pub ratio: Option<RatioInterval>,
    pub agrees: bool,
    pub machine: String,
    pub verified_at: String,
}

/// One submission in a student's history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryRow {
    pub id: String,
    pub lab: u32,
    pub ratio: Option<RatioInterval>,
    pub cpu_model: String,
    pub submitted_at: String,
    /// This submission's standing.
    pub standing: Standing,
    pub verification: Option<VerifiedView>,
}

/// `GET /api/cohorts/{cohort}/students/{student}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StudentView {
    pub cohort: String,
    pub student: String,
    pub name: String,
    pub submissions: Vec<HistoryRow>,
}

/// `GET /api/cohorts/{cohort}/submissions/{id}` (the instructor's): what `leaderboard verify`
/// re-runs.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmissionDetail {
    pub id: String,
    pub student: String,
    pub lab: u32,
    pub bundle: Bundle,
    pub change: String,
    /// The cohort's hidden workload seed (never shown to students).
    pub hidden_seed: u64,
    pub verification: Option<VerifiedView>,
}

/// `POST /api/cohorts/{cohort}/submissions/{id}/verification` (the instructor's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub passed: bool,
    /// The re-run's B/A and interval (`None` for a lab that only has to finish).
    pub ratio: Option<RatioInterval>,
    /// Where it was re-run (the instructor's machine or cluster).
    #[schema(max_length = 200)]
    pub machine: String,
}

/// The verification's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verified {
    pub agrees: bool,
    /// Flagged for the instructor: the re-run disagrees beyond both intervals.
    pub flagged: bool,
}

/// One student's grade on one lab.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GradeRow {
    pub student: String,
    pub lab: u32,
    /// Where the student stands on the lab; `passed` is `standing.counts()`.
    pub standing: Standing,
    pub passed: bool,
    pub bonus: bool,
    pub points: f64,
}

impl GradeRow {
    /// The header of grades.csv (a test holds it to the fields).
    pub const COLUMNS: &[&str] = &["student", "lab", "standing", "passed", "bonus", "points"];
}

/// A student with no pass on a lab after N tries.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StuckRow {
    pub student: String,
    pub lab: u32,
    pub tries: u32,
    pub last_reason: String,
}

/// One submission in the export.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportRow {
    pub id: String,
    pub student: String,
    pub lab: u32,
    pub ratio: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub cpu_model: String,
    pub cores: u32,
    pub submitted_at: String,
    /// This submission's standing (not the student's best).
    pub standing: Standing,
    pub verified: bool,
    pub verified_passed: Option<bool>,
    pub verified_ratio: Option<f64>,
    pub flagged: bool,
}

impl ExportRow {
    /// The header of submissions.csv (a test holds it to the fields).
    pub const COLUMNS: &[&str] = &[
        "id",
        "student",
        "lab",
        "ratio",
        "low",
        "high",
        "cpu_model",
        "cores",
        "submitted_at",
        "standing",
        "verified",
        "verified_passed",
        "verified_ratio",
        "flagged",
    ];
}

/// `GET /api/cohorts/{cohort}/export.json` (the instructor's).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Export {
    pub cohort: String,
    /// Results that are self-reported passes not verified yet: while above 0, the grades are
    /// provisional (they count those as not passed).
    pub not_verified_yet: u32,
    /// What the grades count, in words (and, while provisional, that they are).
    pub note: String,
    pub grades: Vec<GradeRow>,
    pub submissions: Vec<ExportRow>,
    pub copies: Copies,
}

/// An upload refused because its figures were another student's.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RefusedCopy {
    pub student: String,
    pub lab: u32,
    /// What matched, and whose submission: "the same figures as submission s_... of ada".
    pub what: String,
    pub at: String,
}

/// What the instructor is shown of copies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Copies {
    pub refused: Vec<RefusedCopy>,
    /// Students whose latest changes to a code lab are alike (1.0: the same code once
    /// comments and whitespace are out).
    pub alike: Vec<Alike>,
}
