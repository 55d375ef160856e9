//! The web pages: server-rendered HTML (minijinja templates compiled into the binary, no
//! front-end build), readable on a phone. A cohort's overview, a lab's board with its strip
//! plot, a student's history with its plot, and the instructor's page (signed in with the
//! instructor token, kept in an HttpOnly cookie).

use crate::api::{self, ApiError};
use crate::auth::Caller;
use crate::{App, COOKIE, plot};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use observatory_leaderboard::{Standing, Tier};
use std::collections::HashMap;
use std::sync::Arc;

/// The templates, compiled into the binary.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // `{{ g.standing | standing }}`: a standing's words (`not_verified_yet` -> "not verified
    // yet"), from the one definition.
    env.add_filter("standing", |name: String| {
        Standing::ALL
            .into_iter()
            .find(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(|v| v == name))
                    == Some(true)
            })
            .map_or(name.clone(), |s| s.words().to_string())
    });
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("index.html", include_str!("../templates/index.html")),
        ("overview.html", include_str!("../templates/overview.html")),
        ("board.html", include_str!("../templates/board.html")),
        ("student.html", include_str!("../templates/student.html")),
        (
            "instructor.html",
            include_str!("../templates/instructor.html"),
        ),
        ("error.html", include_str!("../templates/error.html")),
    ] {
        // The templates are part of the binary: one that does not parse is a build defect
        // that every page test shows at once.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "template does not parse");
        }
    }
    env
}

fn render(app: &App, name: &str, cx: minijinja::Value) -> Result<String, ApiError> {
    app.templates
        .get_template(name)
        .and_then(|t| t.render(cx))
        .map_err(|e| {
            tracing::error!(template = name, error = %e, "rendering");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "a page failed to render")
        })
}

fn html(status: StatusCode, body: impl Into<Bytes>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

/// A page's error, as a page.
fn page_error(app: &App, cohort: Option<&str>, e: ApiError) -> Response {
    let body = render(
        app,
        "error.html",
        context! { status => e.status.as_u16(), message => e.message, cohort => cohort },
    )
    .unwrap_or_else(|_| "error".into());
    html(e.status, body)
}

async fn index(State(app): State<Arc<App>>) -> Response {
    match render(&app, "index.html", context! {}) {
        Ok(b) => html(StatusCode::OK, b),
        Err(e) => page_error(&app, None, e),
    }
}

async fn overview(State(app): State<Arc<App>>, Path(cohort): Path<String>) -> Response {
    let page = api::cached(
        &app,
        format!("page/overview/{cohort}"),
        "text/html; charset=utf-8",
        || async {
            let o = api::overview_view(&app, &cohort).await?;
            render(
                &app,
                "overview.html",
                context! { o => Value::from(Serde(&o)), cohort => &cohort },
            )
            .map(Bytes::from)
        },
    )
    .await;
    page.unwrap_or_else(|e| page_error(&app, Some(&cohort), e))
}

async fn board(
    State(app): State<Arc<App>>,
    Path((cohort, lab)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let tier = match q.get("tier").map(String::as_str) {
        Some("self_reported") => Tier::SelfReported,
        _ => Tier::Verified,
    };
    let page = api::cached(
        &app,
        format!("page/board/{cohort}/{lab}/{tier:?}"),
        "text/html; charset=utf-8",
        || async {
            let b = api::board_view(&app, &cohort, &lab, tier).await?;
            let axis = plot::Axis::new(
                b.rows.iter().flat_map(|r| [r.low, r.high]).flatten(),
                b.bound,
            );
            let ivs: Vec<Option<plot::Interval>> = b
                .rows
                .iter()
                .map(|r| Some(axis.interval(r.ratio?, r.low?, r.high?)))
                .collect();
            render(
                &app,
                "board.html",
                context! { b => Value::from(Serde(&b)), axis => Value::from(Serde(&axis)), ivs => Value::from(Serde(&ivs)), cohort => &cohort },
            )
            .map(Bytes::from)
        },
    )
    .await;
    page.unwrap_or_else(|e| page_error(&app, Some(&cohort), e))
}

/// One lab on a student's page: its direction, bound, best self-reported ratio, and each
/// submission with its interval on the lab's own axis (labs where lower is better and labs
/// where higher is better are never drawn on one axis).
#[derive(serde::Serialize)]
struct LabHistory<'a> {
    lab: u32,
    title: String,
    lower_is_better: bool,
    bound: f64,
    /// The best self-reported ratio, and how far past the bound it is (x 1.25: a quarter
    /// better than a pass needs).
    best: Option<f64>,
    margin: Option<f64>,
    axis: plot::Axis,
    rows: Vec<(&'a crate::wire::HistoryRow, Option<plot::Interval>)>,
}

fn lab_histories<'a>(app: &App, rows: &'a [crate::wire::HistoryRow]) -> Vec<LabHistory<'a>> {
    use observatory_stats::{Better, Threshold};
    let labs: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.lab).collect();
    labs.into_iter()
        .map(|lab| {
            let mine: Vec<&crate::wire::HistoryRow> =
                rows.iter().filter(|r| r.lab == lab).collect();
            let info = app.labs.get(&lab);
            let better = info.map_or(Better::Lower, |i| i.rule.better);
            let bound = info.map_or(1.0, |i| Threshold::new(better, i.rule.min_effect).bound());
            let axis = plot::Axis::new(
                mine.iter()
                    .filter_map(|r| r.ratio)
                    .flat_map(|r| [r.low, r.high]),
                bound,
            );
            let ratios = mine.iter().filter_map(|r| r.ratio.map(|x| x.ratio));
            let best = match better {
                Better::Lower => ratios.reduce(f64::min),
                Better::Higher => ratios.reduce(f64::max),
            };
            let margin = best.filter(|b| *b > 0.0).map(|b| match better {
                Better::Lower => bound / b,
                Better::Higher => b / bound,
            });
            LabHistory {
                lab,
                title: info.map_or_else(String::new, |i| i.title.clone()),
                lower_is_better: better == Better::Lower,
                bound,
                best,
                margin,
                rows: mine
                    .into_iter()
                    .map(|r| (r, r.ratio.map(|x| axis.interval(x.ratio, x.low, x.high))))
                    .collect(),
                axis,
            }
        })
        .collect()
}

async fn student(
    State(app): State<Arc<App>>,
    Path((cohort, student)): Path<(String, String)>,
) -> Response {
    let page = api::cached(
        &app,
        format!("page/student/{cohort}/{student}"),
        "text/html; charset=utf-8",
        || async {
            let s = api::student_view(&app, &cohort, &student).await?;
            let labs = lab_histories(&app, &s.submissions);
            render(
                &app,
                "student.html",
                context! { s => Value::from(Serde(&s)), labs => Value::from(Serde(&labs)), cohort => &cohort },
            )
            .map(Bytes::from)
        },
    )
    .await;
    page.unwrap_or_else(|e| page_error(&app, Some(&cohort), e))
}

async fn instructor(
    State(app): State<Arc<App>>,
    Path(cohort): Path<String>,
    headers: HeaderMap,
) -> Response {
    let signed_in = match api::caller(&app, &headers).await {
        Ok(c) => c.instructor_of(&cohort).is_ok(),
        Err(_) => false,
    };
    let page = async {
        if !signed_in {
            let body = render(
                &app,
                "instructor.html",
                context! { cohort => &cohort, signed_in => false },
            )?;
            return Ok(html(StatusCode::UNAUTHORIZED, body));
        }
        let tries = 3;
        let attempts = app.db.attempts(&cohort).await?;
        let stuck = crate::views::stuck(&attempts, tries);
        let grades = api::grades_view(&app, &cohort).await?;
        let (not_verified_yet, note) = api::grades_note(&grades);
        let copies = api::copies_view(&app, &cohort, &attempts).await?;
        let standings: Vec<Value> = Standing::ALL
            .iter()
            .map(|s| context! { words => s.words(), meaning => s.meaning() })
            .collect();
        let flagged: Vec<_> = crate::views::export_rows(&app.db.submissions(&cohort).await?)
            .into_iter()
            .filter(|r| r.flagged)
            .collect();
        let body = render(
            &app,
            "instructor.html",
            context! { cohort => &cohort, signed_in => true, tries => tries, stuck => Value::from(Serde(&stuck)), grades => Value::from(Serde(&grades)), flagged => Value::from(Serde(&flagged)), not_verified_yet => not_verified_yet, note => note, standings => standings, copies => Value::from(Serde(&copies)) },
        )?;
        Ok::<_, ApiError>(html(StatusCode::OK, body))
    };
    page.await
        .unwrap_or_else(|e| page_error(&app, Some(&cohort), e))
}

/// The sign-in form: a valid instructor token of the cohort becomes an HttpOnly cookie.
async fn login(State(app): State<Arc<App>>, Path(cohort): Path<String>, body: Body) -> Response {
    let attempt = async {
        let bytes = api::read_body(body).await?;
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "that is not a token"))?;
        headers.insert(header::AUTHORIZATION, bearer);
        match api::caller(&app, &headers).await? {
            c @ (Caller::Admin | Caller::Instructor { .. }) => c.instructor_of(&cohort)?,
            _ => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a student token cannot sign in here",
                ));
            }
        }
        tracing::info!(%cohort, "instructor signed in on the page");
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
        let cookie = HeaderValue::from_str(&cookie).map_err(ApiError::internal)?;
        let to = HeaderValue::from_str(&format!("/c/{cohort}/instructor"))
            .map_err(ApiError::internal)?;
        Ok::<_, ApiError>(
            (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, to)],
            )
                .into_response(),
        )
    };
    match attempt.await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%cohort, status = e.status.as_u16(), "instructor sign-in refused");
            let body = render(
                &app,
                "instructor.html",
                context! { cohort => &cohort, signed_in => false, message => e.message },
            )
            .unwrap_or_default();
            html(e.status, body)
        }
    }
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index))
        .route("/c/{cohort}", get(overview))
        .route("/c/{cohort}/labs/{lab}", get(board))
        .route("/c/{cohort}/students/{student}", get(student))
        .route("/c/{cohort}/instructor", get(instructor))
        .route("/c/{cohort}/login", post(login))
}
