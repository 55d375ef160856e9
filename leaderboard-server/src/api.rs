//! The JSON API. Every answer that is not a success is JSON too (`{"error": "..."}`) with its
//! status: 400 bad input, 401 no or bad token, 403 not this holder's, 404 no such thing, 409 a
//! conflict (the lab is not open, the cohort exists), 413 too large, 422 a refused bundle, 429
//! over a limit. The OpenAPI document at `/api/openapi.json` is generated from this file.

use crate::auth::{self, Caller, Denied};
use crate::db::{
    AttemptRow, COPY_REASON, CohortRow, LabRow, NewSubmission, StudentRow, VerificationRow,
};
use crate::limits::{
    DEFAULT_DAILY_LIMIT, MAX_BODY_BYTES, MAX_CHANGE_BYTES, MAX_DAILY_LIMIT, MAX_ROSTER_ROWS,
};
use crate::wire::*;
use crate::{App, Cached, LabInfo, now_ms, parse_time, views};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use observatory_leaderboard::copies::Digests;
use observatory_leaderboard::{Standing, Tier, agrees, text, well_formed};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::OpenApi;

type AppState = State<Arc<App>>;

/// A refusal or an error, answered as `{"error": ...}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server's log)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Db(e) => ApiError::internal(e),
            Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            other => ApiError::new(StatusCode::UNAUTHORIZED, other.to_string()),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> ApiError {
        ApiError::internal(e)
    }
}

type Answer<T> = Result<T, ApiError>;

/// The caller of a request, counted against their rate limit.
pub async fn caller(app: &App, headers: &HeaderMap) -> Answer<Caller> {
    let token = auth::token_of(headers).ok_or(Denied::Missing)?;
    let who = auth::caller(&app.db, &app.admin_sha256, &token).await?;
    app.limiter.check(&who.key()).map_err(|wait| ApiError {
        retry_after: Some(wait),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests with this token: try again in {wait} s"),
        )
    })?;
    Ok(who)
}

/// The whole body, at most [`MAX_BODY_BYTES`] (413 past it).
pub async fn read_body(body: Body) -> Answer<Bytes> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
        })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Answer<T> {
    // serde_json refuses documents nested deeper than 128: the walk below stays shallow.
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("the JSON body: {e}")))?;
    whole_numbers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad(format!("the JSON body at {path}: {}", e.into_inner()))
    })
}

/// JSON Schema (and so the OpenAPI document) counts `2.0` as an integer; serde's integer types
/// do not. A whole number written with a fraction becomes that integer (an `f64` field takes
/// it all the same); 1.5 stays 1.5 and is refused where an integer is wanted.
fn whole_numbers(v: &mut serde_json::Value) {
    use serde_json::{Number, Value};
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                // Exactly representable: |f| < 2^53.
                if f.abs() < 9_007_199_254_740_992.0 {
                    *n = if f >= 0.0 {
                        Number::from(f as u64)
                    } else {
                        Number::from(f as i64)
                    };
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers),
        Value::Object(o) => o.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

fn id_ok(what: &str, id: &str) -> Answer<()> {
    if !text::slug_ok(id) {
        return Err(ApiError::refused(format!(
            "{what} {:?}: {}",
            id.chars().take(80).collect::<String>(),
            text::SLUG_RULE
        )));
    }
    Ok(())
}

fn plain_ok(what: &str, v: &str, max: usize) -> Answer<()> {
    if !text::plain_ok(v, max) {
        return Err(ApiError::refused(format!(
            "{what}: {}",
            text::plain_rule(max)
        )));
    }
    Ok(())
}

async fn cohort_of(app: &App, id: &str) -> Answer<CohortRow> {
    app.db
        .cohort(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cohort {id:?}")))
}

pub fn lab_of<'a>(app: &'a App, lab: &str) -> Answer<&'a LabInfo> {
    let n: u32 = lab
        .parse()
        .map_err(|_| ApiError::bad(format!("lab {lab:?} is not a lab number")))?;
    app.labs
        .get(&n)
        .ok_or_else(|| ApiError::not_found(format!("lab {n} is not in this course")))
}

fn random_id(prefix: &str) -> Answer<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(ApiError::internal)?;
    Ok(format!(
        "{prefix}{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

fn new_token() -> Answer<String> {
    auth::new_token().map_err(ApiError::internal)
}

/// Serve a public answer from the cache, or compute and keep it.
pub async fn cached<F, Fut>(
    app: &App,
    key: String,
    content_type: &'static str,
    compute: F,
) -> Answer<Response>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Answer<Bytes>>,
{
    // A write during the computation bumps the generation: the next request gets a new slot.
    let c = app
        .cache
        .get_or_compute(&key, || async {
            Ok::<_, ApiError>(Arc::new(Cached {
                content_type,
                body: compute().await?,
            }))
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(c.content_type),
        )],
        c.body.clone(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "serving", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(post, path = "/api/cohorts", request_body = NewCohort, security(("bearer" = [])),
    responses((status = 201, body = CohortCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_cohort(State(app): AppState, headers: HeaderMap, body: Body) -> Answer<Response> {
    if caller(&app, &headers).await? != Caller::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "creating a cohort needs the server's admin token",
        ));
    }
    let new: NewCohort = parse_json(&read_body(body).await?)?;
    id_ok("cohort", &new.id)?;
    if new.name.is_empty() {
        return Err(ApiError::refused("name: not empty"));
    }
    plain_ok("name", &new.name, 200)?;
    let daily_limit = new.daily_limit.unwrap_or(DEFAULT_DAILY_LIMIT);
    if !(1..=MAX_DAILY_LIMIT).contains(&daily_limit) {
        return Err(ApiError::refused(format!(
            "daily_limit: from 1 to {MAX_DAILY_LIMIT} uploads per student per lab"
        )));
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(ApiError::internal)?;
    let token = new_token()?;
    let row = CohortRow {
        id: new.id.clone(),
        name: new.name,
        // Positive, so that it survives every database's BIGINT and every seed knob.
        hidden_seed: (u64::from_le_bytes(seed) >> 1) as i64,
        daily_limit: i64::from(daily_limit),
    };
    if !app
        .db
        .create_cohort(&row, &auth::digest(&token), now_ms())
        .await?
    {
        return Err(ApiError::conflict(format!("cohort {:?} exists", new.id)));
    }
    app.cache.invalidate();
    tracing::info!(cohort = %new.id, by = "admin", "cohort created");
    Ok(json(
        StatusCode::CREATED,
        &CohortCreated {
            cohort: new.id,
            instructor_token: token,
        },
    ))
}

/// Parse a roster: a header `student,name,email` (name and email optional), one row each.
pub fn parse_roster(text: &[u8]) -> Answer<Vec<StudentRow>> {
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text);
    let headers = r
        .headers()
        .map_err(|e| ApiError::refused(format!("roster: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let student = col("student").ok_or_else(|| {
        ApiError::refused("roster: the header must name a `student` column (student,name,email)")
    })?;
    let (name, email) = (col("name"), col("email"));
    let mut out: Vec<StudentRow> = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| ApiError::refused(format!("roster line {line}: {e}")))?;
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").to_string();
        let s = StudentRow {
            id: field(Some(student)),
            name: field(name),
            email: field(email),
        };
        id_ok(&format!("roster line {line}: student"), &s.id)?;
        plain_ok(&format!("roster line {line}: name"), &s.name, 200)?;
        plain_ok(&format!("roster line {line}: email"), &s.email, 200)?;
        if out.iter().any(|o| o.id == s.id) {
            return Err(ApiError::refused(format!(
                "roster line {line}: student {:?} is listed twice",
                s.id
            )));
        }
        out.push(s);
        if out.len() > MAX_ROSTER_ROWS {
            return Err(ApiError::refused(format!(
                "roster: at most {MAX_ROSTER_ROWS} students"
            )));
        }
    }
    Ok(out)
}

#[utoipa::path(post, path = "/api/cohorts/{cohort}/roster", security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv", description = "student,name,email"),
    params(("cohort" = String, Path)),
    responses((status = 200, body = RosterImported), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn import_roster(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    cohort_of(&app, &cohort).await?;
    let students = parse_roster(&read_body(body).await?)?;
    let mut with_tokens = Vec::with_capacity(students.len());
    let mut tokens = HashMap::new();
    for s in students {
        let t = new_token()?;
        with_tokens.push((s.clone(), auth::digest(&t)));
        tokens.insert(s.id, t);
    }
    let added = app.db.add_students(&cohort, &with_tokens, now_ms()).await?;
    app.cache.invalidate();
    tracing::info!(%cohort, by = "instructor", added = added.len(), listed = with_tokens.len(), "roster imported");
    let issued = added
        .iter()
        .filter_map(|id| {
            Some(IssuedToken {
                student: id.clone(),
                token: tokens.get(id)?.clone(),
            })
        })
        .collect();
    let already_on_roster = with_tokens
        .iter()
        .map(|(s, _)| s.id.clone())
        .filter(|id| !added.contains(id))
        .collect();
    Ok(json(
        StatusCode::OK,
        &RosterImported {
            issued,
            already_on_roster,
        },
    ))
}

async fn revoke_or_rotate(
    app: &App,
    cohort: &str,
    student: &str,
    headers: &HeaderMap,
    rotate: bool,
) -> Answer<Response> {
    caller(app, headers).await?.instructor_of(cohort)?;
    if app.db.student(cohort, student).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no student {student:?} in cohort {cohort:?}"
        )));
    }
    let token = if rotate { Some(new_token()?) } else { None };
    let digest = token.as_deref().map(auth::digest);
    app.db
        .revoke(cohort, student, digest.as_deref(), now_ms())
        .await?;
    tracing::info!(%cohort, %student, by = "instructor", "{}", if rotate { "token rotated" } else { "tokens revoked" });
    Ok(json(
        StatusCode::OK,
        &IssuedToken {
            student: student.to_string(),
            token: token.unwrap_or_default(),
        },
    ))
}

#[utoipa::path(post, path = "/api/cohorts/{cohort}/students/{student}/revoke", security(("bearer" = [])),
    params(("cohort" = String, Path), ("student" = String, Path)),
    responses((status = 200, description = "every token of the student is revoked (`token` is empty)", body = IssuedToken),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn revoke(
    State(app): AppState,
    Path((cohort, student)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    revoke_or_rotate(&app, &cohort, &student, &headers, false).await
}

#[utoipa::path(post, path = "/api/cohorts/{cohort}/students/{student}/rotate", security(("bearer" = [])),
    params(("cohort" = String, Path), ("student" = String, Path)),
    responses((status = 200, description = "the old tokens are revoked; the new one is shown once", body = IssuedToken),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn rotate(
    State(app): AppState,
    Path((cohort, student)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    revoke_or_rotate(&app, &cohort, &student, &headers, true).await
}

#[utoipa::path(put, path = "/api/cohorts/{cohort}/labs/{lab}", security(("bearer" = [])),
    request_body = LabSettings, params(("cohort" = String, Path), ("lab" = u32, Path)),
    responses((status = 200, body = LabSummary), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn set_lab(
    State(app): AppState,
    Path((cohort, lab)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    cohort_of(&app, &cohort).await?;
    let info = lab_of(&app, &lab)?.clone();
    let s: LabSettings = parse_json(&read_body(body).await?)?;
    let now = now_ms();
    let opens_ms = match &s.opens_at {
        Some(t) => parse_time(t).map_err(ApiError::refused)?,
        None => now,
    };
    let closes_ms = parse_time(&s.closes_at).map_err(ApiError::refused)?;
    if closes_ms <= opens_ms {
        return Err(ApiError::refused("closes_at must be after opens_at"));
    }
    let grading = s.grading.unwrap_or_else(views::default_grading);
    if let observatory_leaderboard::GradingRule::Threshold { bonus_within } = &grading
        && !(bonus_within.is_finite() && *bonus_within >= 1.0 && *bonus_within <= 10.0)
    {
        return Err(ApiError::refused(
            "grading.bonus_within: from 1 to 10 (1.05: within 5% of the best)",
        ));
    }
    if let observatory_leaderboard::GradingRule::Rank { points } = &grading
        && (points.is_empty() || points.len() > 100 || points.iter().any(|p| !p.is_finite()))
    {
        return Err(ApiError::refused("grading.points: 1 to 100 finite numbers"));
    }
    let row = LabRow {
        lab: i64::from(info.rule.lab),
        opens_ms,
        closes_ms,
        grading: serde_json::to_string(&grading).map_err(ApiError::internal)?,
    };
    app.db.set_lab(&cohort, &row).await?;
    app.cache.invalidate();
    tracing::info!(%cohort, lab = row.lab, by = "instructor", opens = %crate::show_ms(opens_ms), closes = %crate::show_ms(closes_ms), grading = %row.grading, "lab opened or changed");
    let roster = app.db.students(&cohort).await?.len();
    let subs = app.db.submissions_of_lab(&cohort, row.lab).await?;
    Ok(json(
        StatusCode::OK,
        &views::lab_summary(&info, &row, &subs, roster, now),
    ))
}

#[utoipa::path(post, path = "/api/cohorts/{cohort}/submissions", security(("bearer" = [])),
    request_body = Upload, params(("cohort" = String, Path)),
    responses((status = 201, description = "stored", body = Submitted),
        (status = 200, description = "the same idempotency key was stored before: nothing new is stored", body = Submitted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the lab is not open", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "the bundle is refused", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn submit(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    let answer = upload(&app, &cohort, &headers, body).await;
    if let Err(e) = &answer {
        // Every refused upload, whatever refused it (a token, a limit, the lab, the bundle),
        // with its reason quoted (`?`: control characters escaped, so a bundle's text cannot
        // forge a log line).
        tracing::info!(%cohort, status = e.status.as_u16(), reason = ?e.message, "upload refused");
    }
    answer
}

async fn upload(app: &App, cohort: &str, headers: &HeaderMap, body: Body) -> Answer<Response> {
    let cohort = cohort.to_string();
    let who = caller(app, headers).await?;
    let student = who.student_of(&cohort)?.to_string();
    let c = cohort_of(app, &cohort).await?;
    let upload: Upload = parse_json(&read_body(body).await?)?;
    let b = &upload.bundle;
    let info = lab_of(app, &b.lab.to_string())?;
    let lab = i64::from(b.lab);
    let now = now_ms();
    let Some(row) = app
        .db
        .labs(&cohort)
        .await?
        .into_iter()
        .find(|l| l.lab == lab)
    else {
        return Err(ApiError::conflict(format!(
            "lab {lab} is not open in cohort {cohort}: ask your instructor"
        )));
    };
    if now < row.opens_ms {
        return Err(ApiError::conflict(format!(
            "lab {lab} opens at {}",
            crate::show_ms(row.opens_ms)
        )));
    }
    if now >= row.closes_ms {
        return Err(ApiError::conflict(format!(
            "lab {lab} closed at {}: uploads after the deadline are not accepted",
            crate::show_ms(row.closes_ms)
        )));
    }
    let bundle_json = serde_json::to_string(b).map_err(ApiError::internal)?;
    if let Some(id) = app
        .db
        .submission_with_key(&cohort, &student, &b.idempotency_key)
        .await?
    {
        return retried(app, &cohort, &id, &bundle_json, &upload.change).await;
    }
    let used = app
        .db
        .attempts_since(&cohort, &student, lab, now - 24 * 3600 * 1000)
        .await?;
    if used >= c.daily_limit {
        return Err(ApiError {
            retry_after: Some(3600),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{used} uploads to lab {lab} in the last 24 hours: the cohort allows {}",
                    c.daily_limit
                ),
            )
        });
    }
    let refuse = |reason: String| async {
        app.db
            .record_attempt(&cohort, &student, lab, now, false, &reason)
            .await?;
        Err::<Response, _>(ApiError::refused(reason))
    };
    if upload.change.len() > MAX_CHANGE_BYTES {
        return refuse(format!("the change is over {MAX_CHANGE_BYTES} bytes")).await;
    }
    if observatory_leaderboard::sha256_hex(upload.change.as_bytes()) != b.change_sha256 {
        return refuse(
            "the change sent is not the change that was checked (its sha256 is not the bundle's change_sha256)".into(),
        )
        .await;
    }
    let ratio = match b.validate(&info.rule) {
        Ok(r) => r,
        Err(refusal) => return refuse(refusal.to_string()).await,
    };
    if let Err(why) = plausible(b, now) {
        return refuse(why).await;
    }
    // Figures are measured once, by one student's check: another student's figures (exact, or
    // a side reordered, rescaled or nudged), in any lab or cohort, are a replay or a copy. The
    // student is told what matched, the instructor whose.
    let digests = Digests::of(b.figures.as_ref(), &upload.change);
    let mine = digests.all();
    let keys: Vec<&str> = mine.iter().map(|(d, _)| *d).collect();
    for theirs in app.db.digests_of_others(&cohort, &student, &keys).await? {
        let kind = mine
            .iter()
            .find(|(d, _)| *d == theirs.digest)
            .map(|(_, k)| *k);
        if let Some(copied) =
            kind.and_then(|k| k.check(&digests, &theirs.change_norm, theirs.counts != 0))
        {
            let whose = if theirs.cohort == cohort {
                theirs.student.clone()
            } else {
                format!("{} of cohort {}", theirs.student, theirs.cohort)
            };
            let reason = format!(
                "{COPY_REASON}{} as submission {} (lab {}) of {whose}",
                copied.words(),
                theirs.submission,
                theirs.lab
            );
            app.db
                .record_attempt(&cohort, &student, lab, now, false, &reason)
                .await?;
            tracing::warn!(%cohort, %student, lab, copy_of = %theirs.submission, other = %whose, what = copied.words(), "upload refused as a copy");
            return Err(ApiError::conflict(format!(
                "refused: this upload carries {} as another student's upload. Figures are measured once, by your own check: run `observatory lab check {lab}` and submit that",
                copied.words()
            )));
        }
    }
    let id = random_id("s_")?;
    let stored = app
        .db
        .insert_submission(&NewSubmission {
            id: &id,
            cohort: &cohort,
            student: &student,
            lab,
            idempotency_key: &b.idempotency_key,
            ratio: ratio.map(|r| (r.ratio, r.low, r.high)),
            change_sha256: &b.change_sha256,
            change_text: &upload.change,
            cpu_model: &b.fingerprint.cpu_model,
            cores: i64::from(b.fingerprint.cores),
            bundle: &bundle_json,
            received_ms: now,
            digests: &digests,
            better: info.rule.better,
        })
        .await?;
    if !stored {
        // A retry that raced the first upload: the first one is the submission.
        let first = app
            .db
            .submission_with_key(&cohort, &student, &b.idempotency_key)
            .await?
            .ok_or_else(|| ApiError::internal("a duplicate submission vanished"))?;
        return retried(app, &cohort, &first, &bundle_json, &upload.change).await;
    }
    app.cache.invalidate();
    tracing::info!(%cohort, %student, lab, %id, "submission stored");
    Ok(json(
        StatusCode::CREATED,
        &Submitted {
            id,
            duplicate: false,
            ratio,
        },
    ))
}

/// A retried upload (its idempotency key is stored): the stored submission when the bundle
/// and the change are the same, 409 when the key is reused for anything else.
async fn retried(
    app: &App,
    cohort: &str,
    id: &str,
    bundle_json: &str,
    change: &str,
) -> Answer<Response> {
    let (stored_bundle, stored_change) = app
        .db
        .stored_upload(id)
        .await?
        .ok_or_else(|| ApiError::internal("a stored submission vanished"))?;
    if stored_bundle != bundle_json || stored_change != change {
        return Err(ApiError::conflict(
            "this idempotency key was used for another bundle: a retry sends the same bundle, a new check makes a new key",
        ));
    }
    Ok(json(StatusCode::OK, &duplicate(app, cohort, id).await?))
}

/// What a bundle says about when and where it was checked, held to what is possible: a check
/// time that is an RFC 3339 time, not in the future (5 minutes of clock skew allowed) and not
/// before 2025; 1 to 4,096 cores.
fn plausible(b: &observatory_leaderboard::Bundle, now_ms: i64) -> Result<(), String> {
    let at = parse_time(&b.checked_at).map_err(|e| format!("checked_at: {e}"))?;
    let earliest = parse_time("2025-01-01T00:00:00Z")?;
    if at > now_ms + 5 * 60 * 1000 || at < earliest {
        return Err(format!(
            "checked_at {}: a check made between 2025 and now",
            b.checked_at
        ));
    }
    if !(1..=4096).contains(&b.fingerprint.cores) {
        return Err(format!(
            "fingerprint.cores {}: from 1 to 4096",
            b.fingerprint.cores
        ));
    }
    Ok(())
}

async fn duplicate(app: &App, cohort: &str, id: &str) -> Answer<Submitted> {
    let (row, _, _) = app
        .db
        .submission(cohort, id)
        .await?
        .ok_or_else(|| ApiError::internal("a stored submission vanished"))?;
    Ok(Submitted {
        id: id.to_string(),
        duplicate: true,
        ratio: views::reported(&row),
    })
}

fn tier_of(q: &HashMap<String, String>) -> Answer<Tier> {
    match q.get("tier").map(String::as_str) {
        None | Some("verified") => Ok(Tier::Verified),
        Some("self_reported") => Ok(Tier::SelfReported),
        Some(other) => Err(ApiError::bad(format!(
            "tier {other:?}: verified or self_reported"
        ))),
    }
}

/// The board of a lab (shared by the API and the page).
pub async fn board_view(app: &App, cohort: &str, lab: &str, tier: Tier) -> Answer<BoardView> {
    cohort_of(app, cohort).await?;
    let info = lab_of(app, lab)?;
    // Each student's best entry only (kept at each upload): the cost follows the students, not
    // the uploads.
    let subs = app
        .db
        .board_rows(cohort, i64::from(info.rule.lab), tier)
        .await?;
    views::board(cohort, info, &subs, tier).map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/labs/{lab}/board",
    params(("cohort" = String, Path), ("lab" = u32, Path),
        ("tier" = Option<Tier>, Query, description = "verified (default: what final rankings use) or self_reported")),
    responses((status = 200, body = BoardView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn board(
    State(app): AppState,
    Path((cohort, lab)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer<Response> {
    let tier = tier_of(&q)?;
    let key = format!("api/board/{cohort}/{lab}/{tier:?}");
    cached(&app, key, "application/json", || async {
        let v = board_view(&app, &cohort, &lab, tier).await?;
        serde_json::to_vec(&v)
            .map(Bytes::from)
            .map_err(ApiError::internal)
    })
    .await
}

/// A cohort's overview (shared by the API and the page).
pub async fn overview_view(app: &App, cohort: &str) -> Answer<Overview> {
    let c = cohort_of(app, cohort).await?;
    let roster = app.db.students(cohort).await?.len();
    let subs = app.db.submissions(cohort).await?;
    let now = now_ms();
    let labs = app
        .db
        .labs(cohort)
        .await?
        .iter()
        .filter_map(|l| {
            let info = app.labs.get(&u32::try_from(l.lab).ok()?)?;
            let mine: Vec<_> = subs.iter().filter(|s| s.lab == l.lab).cloned().collect();
            Some(views::lab_summary(info, l, &mine, roster, now))
        })
        .collect();
    Ok(Overview {
        cohort: c.id,
        name: c.name,
        students: roster as u32,
        labs,
    })
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}", params(("cohort" = String, Path)),
    responses((status = 200, body = Overview), (status = 404, body = ErrorBody)))]
async fn overview(State(app): AppState, Path(cohort): Path<String>) -> Answer<Response> {
    cached(
        &app,
        format!("api/overview/{cohort}"),
        "application/json",
        || async {
            let v = overview_view(&app, &cohort).await?;
            serde_json::to_vec(&v)
                .map(Bytes::from)
                .map_err(ApiError::internal)
        },
    )
    .await
}

/// A student's history (shared by the API and the page).
pub async fn student_view(app: &App, cohort: &str, student: &str) -> Answer<StudentView> {
    cohort_of(app, cohort).await?;
    let s = app.db.student(cohort, student).await?.ok_or_else(|| {
        ApiError::not_found(format!("no student {student:?} in cohort {cohort:?}"))
    })?;
    let subs = app.db.submissions_of_student(cohort, student).await?;
    Ok(StudentView {
        cohort: cohort.to_string(),
        student: s.id,
        name: s.name,
        submissions: views::history(&subs),
    })
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/students/{student}",
    params(("cohort" = String, Path), ("student" = String, Path)),
    responses((status = 200, body = StudentView), (status = 404, body = ErrorBody)))]
async fn student(
    State(app): AppState,
    Path((cohort, student)): Path<(String, String)>,
) -> Answer<Response> {
    Ok(json(
        StatusCode::OK,
        &student_view(&app, &cohort, &student).await?,
    ))
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/submissions/{id}", security(("bearer" = [])),
    params(("cohort" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SubmissionDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn submission(
    State(app): AppState,
    Path((cohort, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    let c = cohort_of(&app, &cohort).await?;
    let (row, bundle, change) =
        app.db.submission(&cohort, &id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no submission {id:?} in cohort {cohort:?}"))
        })?;
    let bundle = serde_json::from_str(&bundle).map_err(ApiError::internal)?;
    Ok(json(
        StatusCode::OK,
        &SubmissionDetail {
            id: row.id,
            student: row.student,
            lab: row.lab as u32,
            bundle,
            change,
            hidden_seed: c.hidden_seed as u64,
            verification: row.verification.as_ref().map(views::verified_view),
        },
    ))
}

#[utoipa::path(post, path = "/api/cohorts/{cohort}/submissions/{id}/verification", security(("bearer" = [])),
    request_body = Verification, params(("cohort" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Verified), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn verify(
    State(app): AppState,
    Path((cohort, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    let (row, _, _) =
        app.db.submission(&cohort, &id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no submission {id:?} in cohort {cohort:?}"))
        })?;
    let v: Verification = parse_json(&read_body(body).await?)?;
    plain_ok("machine", &v.machine, 200)?;
    if let Some(r) = &v.ratio
        && !well_formed(r)
    {
        return Err(ApiError::refused(
            "ratio: finite, above 0, low <= ratio <= high",
        ));
    }
    let agreed = match (views::reported(&row), v.ratio, v.passed) {
        (_, _, false) => false,
        (Some(mine), Some(theirs), true) => agrees(&mine, &theirs),
        (None, None, true) => true,
        (Some(_), None, true) => {
            return Err(ApiError::refused(
                "this lab is ranked by its ratio: send the re-run's ratio",
            ));
        }
        (None, Some(_), true) => {
            return Err(ApiError::refused("this lab only has to finish: no ratio"));
        }
    };
    let better = lab_of(&app, &row.lab.to_string())?.rule.better;
    app.db
        .set_verification(
            &row,
            &VerificationRow {
                passed: v.passed,
                ratio: v.ratio.map(|r| r.ratio),
                low: v.ratio.map(|r| r.low),
                high: v.ratio.map(|r| r.high),
                agrees: agreed,
                machine: v.machine.clone(),
                verified_ms: now_ms(),
            },
            better,
        )
        .await?;
    app.cache.invalidate();
    tracing::info!(%cohort, submission = %id, student = %row.student, lab = row.lab, by = "instructor", passed = v.passed, agrees = agreed, machine = %v.machine, "verification recorded");
    Ok(json(
        StatusCode::OK,
        &Verified {
            agrees: agreed,
            flagged: Standing::of_submission(Some((v.passed, agreed))) == Standing::Flagged,
        },
    ))
}

/// Grades of a cohort (shared by the API, the export and the instructor's page).
pub async fn grades_view(app: &App, cohort: &str) -> Answer<Vec<GradeRow>> {
    let labs: Vec<(LabInfo, LabRow)> = app
        .db
        .labs(cohort)
        .await?
        .into_iter()
        .filter_map(|l| Some((app.labs.get(&u32::try_from(l.lab).ok()?)?.clone(), l)))
        .collect();
    let students = app.db.students(cohort).await?;
    let subs = app.db.submissions(cohort).await?;
    views::grades(cohort, &labs, &students, &subs).map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/grades", security(("bearer" = [])), params(("cohort" = String, Path)),
    responses((status = 200, body = Vec<GradeRow>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn grades(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    cohort_of(&app, &cohort).await?;
    Ok(json(StatusCode::OK, &grades_view(&app, &cohort).await?))
}

/// Who is stuck (shared by the API and the instructor's page).
pub async fn stuck_view(app: &App, cohort: &str, tries: u32) -> Answer<Vec<StuckRow>> {
    Ok(views::stuck(&app.db.attempts(cohort).await?, tries))
}

/// Copies for the instructor: uploads refused as another student's figures, and students
/// whose latest changes to a code lab are alike (shared by the page and export.json).
/// `attempts`: the cohort's (the instructor's page reads them once for this and for who is
/// stuck).
pub async fn copies_view(app: &App, cohort: &str, attempts: &[AttemptRow]) -> Answer<Copies> {
    let refused = attempts
        .iter()
        .filter_map(|a| {
            Some(RefusedCopy {
                student: a.student.clone(),
                lab: a.lab as u32,
                what: a.reason.strip_prefix(COPY_REASON)?.to_string(),
                at: crate::show_ms(a.at_ms),
            })
        })
        .collect();
    let changes = app.db.latest_changes(cohort).await?;
    let code: Vec<_> = changes
        .iter()
        .filter(|(lab, ..)| {
            u32::try_from(*lab)
                .ok()
                .and_then(|l| app.labs.get(&l))
                .is_some_and(|info| info.code)
        })
        .map(
            |(lab, student, id, text)| observatory_leaderboard::copies::Change {
                lab: *lab as u32,
                student,
                submission: id,
                text,
            },
        )
        .collect();
    Ok(Copies {
        refused,
        alike: observatory_leaderboard::copies::alike(&code),
    })
}

fn tries_of(q: &HashMap<String, String>) -> Answer<u32> {
    match q.get("tries") {
        None => Ok(3),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad(format!("tries {t:?}: a number from 1 to 1000"))),
    }
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/stuck", security(("bearer" = [])),
    params(("cohort" = String, Path), ("tries" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "refused uploads with no pass (default 3)")),
    responses((status = 200, body = Vec<StuckRow>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn stuck(
    State(app): AppState,
    Path(cohort): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer<Response> {
    caller(&app, &headers).await?.instructor_of(&cohort)?;
    cohort_of(&app, &cohort).await?;
    let tries = tries_of(&q)?;
    Ok(json(
        StatusCode::OK,
        &stuck_view(&app, &cohort, tries).await?,
    ))
}

/// The export; `copies` as well for export.json (the CSV files do not carry them).
async fn export_of(app: &App, cohort: &str, headers: &HeaderMap, copies: bool) -> Answer<Export> {
    caller(app, headers).await?.instructor_of(cohort)?;
    cohort_of(app, cohort).await?;
    let grades = grades_view(app, cohort).await?;
    let (not_verified_yet, note) = grades_note(&grades);
    Ok(Export {
        cohort: cohort.to_string(),
        not_verified_yet,
        note,
        grades,
        submissions: views::export_rows(&app.db.submissions(cohort).await?),
        copies: if copies {
            copies_view(app, cohort, &app.db.attempts(cohort).await?).await?
        } else {
            Copies::default()
        },
    })
}

/// How many grades wait for a verification, and the note that says what the grades count
/// (the first line of a CSV export, the `note` of the JSON one, above the instructor's table).
pub fn grades_note(grades: &[GradeRow]) -> (u32, String) {
    let n = grades
        .iter()
        .filter(|g| g.standing == Standing::NotVerifiedYet)
        .count() as u32;
    (n, export_note(n))
}

fn export_note(not_verified_yet: u32) -> String {
    let counts = "passed = the instructor's re-run passed (standing verified_passed or flagged)";
    if not_verified_yet == 0 {
        format!("final: every uploaded result is verified; {counts}")
    } else {
        format!(
            "PROVISIONAL: {not_verified_yet} result(s) are self-reported passes not verified yet and count as not passed here (run `observatory leaderboard verify`); {counts}"
        )
    }
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/export.json", security(("bearer" = [])), params(("cohort" = String, Path)),
    responses((status = 200, body = Export), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn export_json(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    Ok(json(
        StatusCode::OK,
        &export_of(&app, &cohort, &headers, true).await?,
    ))
}

/// A CSV export: a `# note` first line, the header (also when there are no rows), then the
/// rows with every cell a spreadsheet would read as a formula neutralised.
fn csv_of<T: Serialize>(note: &str, columns: &[&str], rows: &[T]) -> Answer<Response> {
    // Flexible: the note line has one cell, the rows have the header's.
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_writer(Vec::new());
    w.write_record([format!("# {note}")])
        .map_err(ApiError::internal)?;
    w.write_record(columns).map_err(ApiError::internal)?;
    for r in rows {
        let cells = csv_cells(r).map_err(ApiError::internal)?;
        if cells.len() != columns.len() {
            return Err(ApiError::internal(format!(
                "an export row has {} cells for {} columns",
                cells.len(),
                columns.len()
            )));
        }
        w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))
            .map_err(ApiError::internal)?;
    }
    let body = w.into_inner().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

/// A row's cells as csv's serde writer spells them.
fn csv_cells<T: Serialize>(row: &T) -> Result<Vec<String>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.serialize(row)?;
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes.as_slice());
    let rec = r.records().next().transpose()?.unwrap_or_default();
    Ok(rec.iter().map(str::to_string).collect())
}

/// OWASP's rule for CSV injection: a cell that begins with `=`, `+`, `-`, `@`, a tab or a
/// carriage return is prefixed with `'` so a spreadsheet shows it as text. Numbers (a
/// negative one included) are left as they are.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/export/grades.csv", security(("bearer" = [])), params(("cohort" = String, Path)),
    responses((status = 200, content_type = "text/csv", body = String, description = "student,lab,passed,bonus,points"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn export_grades_csv(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let e = export_of(&app, &cohort, &headers, false).await?;
    csv_of(&e.note, GradeRow::COLUMNS, &e.grades)
}

#[utoipa::path(get, path = "/api/cohorts/{cohort}/export/submissions.csv", security(("bearer" = [])), params(("cohort" = String, Path)),
    responses((status = 200, content_type = "text/csv", body = String, description = "one row per accepted submission"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn export_submissions_csv(
    State(app): AppState,
    Path(cohort): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let e = export_of(&app, &cohort, &headers, false).await?;
    csv_of(&e.note, ExportRow::COLUMNS, &e.submissions)
}

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Rust Performance Observatory: cohort leaderboards", description = "Fair rankings of lab results across students' machines: every entry is the lab's own B/A ratio with its 95% interval, placed in B/A order; neighbours whose intervals overlap the first of their run share a tie band."),
    paths(healthz, create_cohort, import_roster, revoke, rotate, set_lab, submit, board, overview, student, submission, verify, grades, stuck, export_json, export_grades_csv, export_submissions_csv),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    json(StatusCode::OK, &ApiDoc::openapi())
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi))
        .route("/api/cohorts", post(create_cohort))
        .route("/api/cohorts/{cohort}", get(overview))
        .route("/api/cohorts/{cohort}/roster", post(import_roster))
        .route("/api/cohorts/{cohort}/students/{student}", get(student))
        .route(
            "/api/cohorts/{cohort}/students/{student}/revoke",
            post(revoke),
        )
        .route(
            "/api/cohorts/{cohort}/students/{student}/rotate",
            post(rotate),
        )
        .route("/api/cohorts/{cohort}/labs/{lab}", put(set_lab))
        .route("/api/cohorts/{cohort}/labs/{lab}/board", get(board))
        .route("/api/cohorts/{cohort}/submissions", post(submit))
        .route("/api/cohorts/{cohort}/submissions/{id}", get(submission))
        .route(
            "/api/cohorts/{cohort}/submissions/{id}/verification",
            post(verify),
        )
        .route("/api/cohorts/{cohort}/grades", get(grades))
        .route("/api/cohorts/{cohort}/stuck", get(stuck))
        .route("/api/cohorts/{cohort}/export.json", get(export_json))
        .route(
            "/api/cohorts/{cohort}/export/grades.csv",
            get(export_grades_csv),
        )
        .route(
            "/api/cohorts/{cohort}/export/submissions.csv",
            get(export_submissions_csv),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_with_a_fraction_is_an_integer_and_nothing_else_changes() {
        let c: NewCohort = parse_json(br#"{"id": "c", "name": "n", "daily_limit": 2.0}"#)
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(c.daily_limit, Some(2));
        let e = parse_json::<NewCohort>(br#"{"id": "c", "name": "n", "daily_limit": 2.5}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("daily_limit"), "{}", e.message);
        let e = parse_json::<NewCohort>(br#"{"id": "c", "name": "n", "daily_limit": -1.0}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("daily_limit"), "{}", e.message);
        let e = parse_json::<NewCohort>(br#"{"id": "c", "name": "n", "daily_limit": 1e300}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("daily_limit"), "{}", e.message);
        // Floats stay floats where floats are wanted.
        let v: Verification = parse_json(
            br#"{"passed": true, "ratio": {"ratio": 2.0, "low": 1.5, "high": 3}, "machine": "m"}"#,
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        let r = v.ratio.unwrap();
        assert_eq!((r.ratio, r.low, r.high), (2.0, 1.5, 3.0));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            parse_json::<Verification>(deep.as_bytes()).is_err(),
            "deep nesting is refused, not a stack overflow"
        );
        let e = parse_json::<NewCohort>(br#"{"id": "c", "name": "n", "extra": 1}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("extra"), "{}", e.message);
    }

    fn export_row(student: &str, cpu_model: &str) -> ExportRow {
        ExportRow {
            id: "s_1".into(),
            student: student.into(),
            lab: 9,
            ratio: Some(0.5),
            low: Some(0.4),
            high: Some(0.6),
            cpu_model: cpu_model.into(),
            cores: 2,
            submitted_at: "2026-12-08T00:00:00Z".into(),
            standing: Standing::NotVerifiedYet,
            verified: false,
            verified_passed: None,
            verified_ratio: None,
            flagged: false,
        }
    }

    async fn body_of(r: Response) -> String {
        let b = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_csv_export_neutralises_formulas_keeps_numbers_and_always_has_its_header() {
        let rows = [
            export_row("ada", r#"=HYPERLINK("http://x","click")"#),
            export_row("bob", "@SUM(1+1)*cmd|' /C calc'!A0"),
            export_row("cy", "+1+cmd"),
            export_row("dee", "\tTab"),
            export_row("eve", "Intel(R) Xeon(R) @ 2.0GHz"),
        ];
        let text = body_of(csv_of("a note", ExportRow::COLUMNS, &rows).unwrap()).await;
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&recs[0][0], "# a note");
        assert_eq!(recs[1].iter().collect::<Vec<_>>(), ExportRow::COLUMNS);
        let cpu = ExportRow::COLUMNS
            .iter()
            .position(|c| *c == "cpu_model")
            .unwrap();
        let cells: Vec<&str> = recs[2..].iter().map(|r| &r[cpu]).collect();
        assert_eq!(
            cells,
            [
                r#"'=HYPERLINK("http://x","click")"#,
                "'@SUM(1+1)*cmd|' /C calc'!A0",
                "'+1+cmd",
                "'\tTab",
                "Intel(R) Xeon(R) @ 2.0GHz"
            ]
        );
        for rec in &recs[2..] {
            for cell in rec {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
                        || cell.parse::<f64>().is_ok(),
                    "{cell:?} reaches a spreadsheet as a formula"
                );
            }
        }
        // Numbers stay numbers, a negative one included.
        assert_eq!(neutralise("-0.5"), "-0.5");
        assert_eq!(neutralise("-A1"), "'-A1");
        // No rows: the note and the header all the same.
        let empty = body_of(csv_of::<GradeRow>("n", GradeRow::COLUMNS, &[]).unwrap()).await;
        assert_eq!(empty, "# n\nstudent,lab,standing,passed,bonus,points\n");
    }

    #[test]
    fn the_csv_headers_are_the_rows_fields() {
        // What csv's serde writer names the fields, held to the constants the header uses.
        let header = |row: &dyn erased::Row| row.header();
        mod erased {
            pub trait Row {
                fn header(&self) -> Vec<String>;
            }
            impl<T: serde::Serialize> Row for T {
                fn header(&self) -> Vec<String> {
                    let mut w = csv::Writer::from_writer(Vec::new());
                    w.serialize(self).unwrap();
                    let bytes = w.into_inner().unwrap();
                    let text = String::from_utf8(bytes).unwrap();
                    text.lines()
                        .next()
                        .unwrap()
                        .split(',')
                        .map(String::from)
                        .collect()
                }
            }
        }
        assert_eq!(header(&export_row("ada", "m")), ExportRow::COLUMNS);
        let g = GradeRow {
            student: "ada".into(),
            lab: 9,
            standing: Standing::VerifiedPassed,
            passed: true,
            bonus: false,
            points: 1.0,
        };
        assert_eq!(header(&g), GradeRow::COLUMNS);
        assert_eq!(
            export_note(0).starts_with("final"),
            !export_note(3).starts_with("final")
        );
        assert!(export_note(3).starts_with("PROVISIONAL: 3 result(s)"));
    }
}
