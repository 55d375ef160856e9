//! The observatory's Grafana dashboards, as data.
//!
//! The JSON files beside this crate are the dashboards (Grafana's current schema, the data
//! source a variable, stable uids). This crate embeds them so that the local runner can
//! provision a Grafana with exactly these files, and lists every query in them so that tests
//! can parse each one and run it against a real Prometheus.

use serde_json::Value;
use std::path::Path;

/// One dashboard file.
#[derive(Clone, Copy, Debug)]
pub struct Dashboard {
    pub file: &'static str,
    pub json: &'static str,
}

/// Every dashboard.
pub const ALL: [Dashboard; 4] = [
    Dashboard {
        file: "pipeline-overview.json",
        json: include_str!("../pipeline-overview.json"),
    },
    Dashboard {
        file: "stage-detail.json",
        json: include_str!("../stage-detail.json"),
    },
    Dashboard {
        file: "operator.json",
        json: include_str!("../operator.json"),
    },
    Dashboard {
        file: "lab-comparison.json",
        json: include_str!("../lab-comparison.json"),
    },
];

impl Dashboard {
    pub fn value(&self) -> Value {
        serde_json::from_str(self.json).expect("a committed dashboard is valid JSON")
    }

    pub fn uid(&self) -> String {
        self.value()["uid"].as_str().unwrap_or_default().to_string()
    }

    pub fn title(&self) -> String {
        self.value()["title"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Where a query sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A panel target (PromQL).
    Panel(String),
    /// An annotation (PromQL).
    Annotation(String),
    /// A template variable (`label_values(selector, label)`).
    Variable(String),
}

/// One query of a dashboard, as written (with `$variables`).
#[derive(Clone, Debug)]
pub struct Query {
    pub dashboard: &'static str,
    pub place: Place,
    pub expr: String,
}

/// Every query of a dashboard: panel targets, annotation expressions, variable queries.
pub fn queries(d: &Dashboard) -> Vec<Query> {
    let v = d.value();
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push(Query {
                    dashboard: d.file,
                    place: Place::Panel(p["title"].as_str().unwrap_or_default().into()),
                    expr: expr.into(),
                });
            }
        }
    }
    for a in v["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                dashboard: d.file,
                place: Place::Annotation(a["name"].as_str().unwrap_or_default().into()),
                expr: expr.into(),
            });
        }
    }
    for var in v["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let expr = var["query"]["query"].as_str().or(var["query"].as_str());
            if let Some(expr) = expr {
                out.push(Query {
                    dashboard: d.file,
                    place: Place::Variable(var["name"].as_str().unwrap_or_default().into()),
                    expr: expr.into(),
                });
            }
        }
    }
    out
}

/// Replace Grafana variables (`$__rate_interval`, `$pipeline`, ...) with concrete values;
/// longest names first, so `$__range` does not eat part of `$__rate_interval`.
pub fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// Split `label_values(selector, label)` into its selector and label.
pub fn label_values(expr: &str) -> Option<(&str, &str)> {
    let inner = expr
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Grafana provisioning for a local Grafana: a Prometheus data source (uid `prometheus`) at
/// `prometheus_url`, and a file provider loading every dashboard from `dir/dashboards`.
/// Returns the provisioning directory (for `GF_PATHS_PROVISIONING`).
pub fn write_provisioning(dir: &Path, prometheus_url: &str) -> std::io::Result<std::path::PathBuf> {
    let prov = dir.join("provisioning");
    let boards = dir.join("dashboards");
    for d in [
        prov.join("datasources"),
        prov.join("dashboards"),
        prov.join("plugins"),
        prov.join("alerting"),
        boards.clone(),
    ] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        prov.join("datasources/prometheus.yaml"),
        datasource_yaml(prometheus_url),
    )?;
    std::fs::write(
        prov.join("dashboards/observatory.yaml"),
        provider_yaml(&boards.display().to_string()),
    )?;
    for d in ALL {
        std::fs::write(boards.join(d.file), d.json)?;
    }
    Ok(prov)
}

/// The data source provisioning file.
pub fn datasource_yaml(url: &str) -> String {
    format!(
        "apiVersion: 1\ndatasources:\n  - name: Prometheus\n    uid: prometheus\n    type: prometheus\n    access: proxy\n    url: {url}\n    isDefault: true\n    editable: false\n    jsonData:\n      timeInterval: 1s\n"
    )
}

/// The dashboard provider provisioning file.
pub fn provider_yaml(path: &str) -> String {
    format!(
        "apiVersion: 1\nproviders:\n  - name: observatory\n    folder: Observatory\n    type: file\n    disableDeletion: true\n    allowUiUpdates: false\n    updateIntervalSeconds: 30\n    options:\n      path: {path}\n      foldersFromFilesStructure: false\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dashboard_has_queries_and_a_stable_unique_uid() {
        let mut uids: Vec<String> = ALL.iter().map(|d| d.uid()).collect();
        assert!(uids.iter().all(|u| u.starts_with("obs-")));
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), ALL.len());
        for d in ALL {
            assert!(
                queries(&d)
                    .iter()
                    .filter(|q| matches!(q.place, Place::Panel(_)))
                    .count()
                    >= 4,
                "{}",
                d.file
            );
        }
        let lab = queries(&ALL[3]);
        assert_eq!(
            lab.iter()
                .filter(|q| matches!(q.place, Place::Annotation(_)))
                .count(),
            4,
            "start and end of both sides"
        );
    }

    fn yaml(path: &Path) -> Value {
        yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn local_provisioning_is_well_formed_and_matches_the_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let prov = write_provisioning(dir.path(), "http://127.0.0.1:9090").unwrap();
        let local_ds = yaml(&prov.join("datasources/prometheus.yaml"));
        let local_pr = yaml(&prov.join("dashboards/observatory.yaml"));
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring/grafana");
        let mut cluster_ds = yaml(&deploy.join("datasources.yaml"));
        let mut cluster_pr = yaml(&deploy.join("dashboards.yaml"));
        // The same provisioning, but for where Prometheus and the files are.
        assert_eq!(local_ds["datasources"][0]["url"], "http://127.0.0.1:9090");
        cluster_ds["datasources"][0]["url"] = local_ds["datasources"][0]["url"].clone();
        cluster_ds["datasources"][0]["jsonData"] = local_ds["datasources"][0]["jsonData"].clone();
        assert_eq!(local_ds, cluster_ds);
        let path = local_pr["providers"][0]["options"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        cluster_pr["providers"][0]["options"]["path"] = Value::String(path.clone());
        assert_eq!(local_pr, cluster_pr);
        for d in ALL {
            let written = std::fs::read_to_string(Path::new(&path).join(d.file)).unwrap();
            assert_eq!(written, d.json, "{} provisioned as is", d.file);
        }
    }

    #[test]
    fn substitution_prefers_the_longest_variable() {
        let e = substitute(
            "rate(x[$__rate_interval]) + y[$__range] + z{a=\"$a\",ab=\"$ab\"}",
            &[
                ("__range", "5m"),
                ("__rate_interval", "1m"),
                ("a", "1"),
                ("ab", "2"),
            ],
        );
        assert_eq!(e, "rate(x[1m]) + y[5m] + z{a=\"1\",ab=\"2\"}");
        assert_eq!(
            label_values("label_values(m{a=\"b\"}, side)"),
            Some(("m{a=\"b\"}", "side"))
        );
        assert_eq!(label_values("up"), None);
    }
}
