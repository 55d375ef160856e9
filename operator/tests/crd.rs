//! The CRD in deploy/ is what the code generates, and the sample Pipeline passes its rules.

use operator::pipeline::crd::{Pipeline, crd_yaml};

const COMMITTED: &str = include_str!("../../deploy/base/crd.yaml");
const SAMPLE: &str = include_str!("../../deploy/samples/pipeline-demo.yaml");

#[test]
fn the_committed_crd_is_the_generated_one() {
    let generated = crd_yaml().unwrap();
    assert!(
        COMMITTED == generated,
        "deploy/base/crd.yaml is stale: run `cargo run -p operator --bin crdgen -- --out deploy/base/crd.yaml`"
    );
    let [crd, _] = operator::pipeline::crd::crds();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("pipelines.observatory.dev")
    );
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["pl".to_string()][..])
    );
    let version = &crd.spec.versions[0];
    assert!(
        version.subresources.as_ref().unwrap().status.is_some(),
        "a status subresource"
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Status", "Age"]);
}

fn sample() -> Pipeline {
    yaml_serde::from_str(SAMPLE).expect("the sample is a Pipeline")
}

#[test]
fn the_sample_passes_the_crd_cel_rules_and_broken_chains_do_not() {
    sample()
        .validate_cel()
        .expect("the sample passes every CEL rule");

    let mut p = sample();
    p.spec.parse = None;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(
        err.contains("an aggregate stage needs a parse stage before it"),
        "{err}"
    );

    let mut p = sample();
    p.spec.aggregate = None;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(
        err.contains("a sink needs an aggregate stage before it"),
        "{err}"
    );

    let mut p = sample();
    p.spec.sink.as_mut().unwrap().replicas = 3;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(err.contains("spec.sink.replicas must be 1"), "{err}");

    // A truncated but contiguous chain is fine.
    let mut p = sample();
    p.spec.sink = None;
    p.spec.aggregate = None;
    p.validate_cel()
        .expect("source -> parse is a valid pipeline");
}

// ---------------------------------------------------------------------------------------------
// What the API server's CEL type checker will say, checked offline.
//
// kube's client-side `cel` feature evaluates rules but does not type-check them the way the API
// server does: there, every object schema is its own declared type, so `self.baseline !=
// self.variant` (two properties with separately declared object schemas) fails to compile
// ("found no matching overload for '_!=_'"), and a real `kubectl apply` of the CRD is refused.
// This check walks every `x-kubernetes-validations` rule of the generated CRDs and requires
// rules simple enough to judge: each `==`/`!=` compares a field path or a literal with another,
// of the same scalar type (or lists of the same scalar type), and every `self.` path exists.

use serde_json::Value;

/// Every rule of a schema, with the schema node it is attached to and that node's path.
fn rules_of(node: &Value, path: &str, out: &mut Vec<(String, Value, String)>) {
    if let Some(rules) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in rules {
            out.push((
                path.to_string(),
                node.clone(),
                r["rule"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules_of(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        rules_of(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        rules_of(extra, &format!("{path}{{}}"), out);
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Path(Vec<String>),
    Str,
    Int,
    Double,
    Bool,
    Null,
    Op(String),
    Ident(String),
}

fn tokens(rule: &str) -> Result<Vec<Tok>, String> {
    let b = rule.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = rule[i + 1..]
                .find(c)
                .ok_or_else(|| format!("unterminated string in `{rule}`"))?;
            i += end + 2;
            out.push(Tok::Str);
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'u') {
                i += 1;
            }
            out.push(if rule[start..i].contains('.') {
                Tok::Double
            } else {
                Tok::Int
            });
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            let word = &rule[start..i];
            let parts: Vec<String> = word.split('.').map(str::to_string).collect();
            out.push(match word {
                "true" | "false" => Tok::Bool,
                "null" => Tok::Null,
                _ if parts[0] == "self" => Tok::Path(parts[1..].to_vec()),
                _ => Tok::Ident(word.to_string()),
            });
        } else {
            let two = rule.get(i..i + 2).unwrap_or_default();
            if ["==", "!=", "||", "&&", "<=", ">="].contains(&two) {
                out.push(Tok::Op(two.to_string()));
                i += 2;
            } else {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The CEL type of `self.<path>` under `node`, as far as this check needs it.
fn type_of(node: &Value, path: &[String]) -> Result<String, String> {
    let mut n = node;
    for p in path {
        n = n
            .get("properties")
            .and_then(|props| props.get(p))
            .ok_or_else(|| format!("no field `{p}`"))?;
    }
    scalar_type(n).map_err(|t| format!("`self.{}` is {t}", path.join(".")))
}

fn scalar_type(n: &Value) -> Result<String, String> {
    match n.get("type").and_then(Value::as_str) {
        Some(t @ ("string" | "boolean")) => Ok(t.into()),
        Some("integer") => Ok("int".into()),
        Some("number") => Ok("double".into()),
        Some("array") => match n.get("items").map(scalar_type) {
            Some(Ok(t)) => Ok(format!("list({t})")),
            _ => Err("a list of objects".into()),
        },
        Some("object") => Err("an object (each object schema is its own CEL type)".into()),
        other => Err(format!("of type {other:?}")),
    }
}

/// Why the API server's type checker would refuse `rule` on `node` (or why this check cannot
/// tell, which is a reason to simplify the rule), or `Ok`.
fn check_rule(node: &Value, rule: &str) -> Result<(), String> {
    let toks = tokens(rule)?;
    for t in &toks {
        if let Tok::Path(p) = t {
            // Every path must exist (an object is fine where it is not compared).
            let mut n = node;
            for part in p {
                n = n
                    .get("properties")
                    .and_then(|props| props.get(part))
                    .ok_or_else(|| {
                        format!("`{rule}`: `self.{}`: no field `{part}`", p.join("."))
                    })?;
            }
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let Tok::Op(op) = t else { continue };
        if op != "==" && op != "!=" {
            continue;
        }
        let operand = |t: Option<&Tok>| -> Result<String, String> {
            match t {
                Some(Tok::Path(p)) => type_of(node, p),
                Some(Tok::Str) => Ok("string".into()),
                Some(Tok::Int) => Ok("int".into()),
                Some(Tok::Double) => Ok("double".into()),
                Some(Tok::Bool) => Ok("boolean".into()),
                other => Err(format!(
                    "compares {other:?}: keep each side of ==/!= a field or a literal"
                )),
            }
        };
        let left = operand(i.checked_sub(1).and_then(|j| toks.get(j)))
            .map_err(|e| format!("`{rule}`: {e}"))?;
        let right = operand(toks.get(i + 1)).map_err(|e| format!("`{rule}`: {e}"))?;
        if left != right {
            return Err(format!(
                "`{rule}`: compares a {left} with a {right}: no matching overload for '_{op}_'"
            ));
        }
    }
    Ok(())
}

fn crd_schemas() -> Vec<(String, Value)> {
    operator::pipeline::crd::crds()
        .into_iter()
        .map(|crd| {
            let v = serde_json::to_value(&crd.spec.versions[0]).unwrap();
            (
                crd.spec.names.kind.clone(),
                v["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_cel_rule_compares_fields_of_one_scalar_type() {
    let mut seen = 0;
    for (kind, schema) in crd_schemas() {
        let mut rules = Vec::new();
        rules_of(&schema, &kind, &mut rules);
        for (path, node, rule) in rules {
            seen += 1;
            if let Err(why) = check_rule(&node, &rule) {
                panic!("{path}: {why}");
            }
        }
    }
    assert!(seen >= 6, "the rules were found ({seen})");
}

#[test]
fn the_cel_check_refuses_what_a_real_api_server_refused() {
    // The rule a Kubernetes 1.36 API server refused: two separately declared object schemas.
    let side = serde_json::json!({"type": "object", "properties": {
        "set": {"type": "array", "items": {"type": "string"}},
        "image": {"type": "string", "nullable": true}}});
    let node = serde_json::json!({"type": "object", "properties": {
        "baseline": side, "variant": side, "replicas": {"type": "integer"}}});
    let err = check_rule(&node, "self.baseline != self.variant").unwrap_err();
    assert!(err.contains("an object"), "{err}");
    // An int against a double, a path that does not exist, and a compound operand.
    assert!(check_rule(&node, "self.replicas == 1.0").is_err());
    assert!(check_rule(&node, "!has(self.sink) || self.sink.replicas == 1").is_err());
    assert!(check_rule(&node, "size(self.baseline.set) == 1").is_err());
    // What is fine: same-typed scalars and lists of scalars, field against literal.
    check_rule(&node, "self.baseline.set != self.variant.set").unwrap();
    check_rule(&node, "!has(self.replicas) || self.replicas == 1").unwrap();
    check_rule(&node, "self.baseline.image == 'x'").unwrap();
}

#[test]
fn every_format_is_one_the_api_server_recognizes() {
    // Integer formats beyond int32/int64 drew `unrecognized format "uint32"` warnings on every
    // apply (Kubernetes 1.36); these are the formats Kubernetes documents for CRD schemas.
    const STRING_FORMATS: [&str; 24] = [
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "date-time",
    ];
    fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let (Some(Value::String(f)), Some(Value::String(t))) =
                    (m.get("format"), m.get("type"))
                {
                    let ok = match t.as_str() {
                        "integer" => operator::pipeline::crd::INTEGER_FORMATS.contains(&f.as_str()),
                        "number" => ["float", "double"].contains(&f.as_str()),
                        "string" => STRING_FORMATS.contains(&f.as_str()),
                        _ => false,
                    };
                    if !ok {
                        bad.push(format!("{path}: {t} with format {f}"));
                    }
                }
                for (k, c) in m {
                    walk(c, &format!("{path}.{k}"), bad);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, path, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for (kind, schema) in crd_schemas() {
        walk(&schema, &kind, &mut bad);
    }
    assert!(bad.is_empty(), "unrecognized formats: {bad:#?}");
    // The unsigned ranges survive as bounds: `lab` is a u32 in 1..=99, `events` a u64 from 0.
    let schemas = crd_schemas();
    let exp = &schemas[1].1["properties"]["spec"]["properties"];
    assert_eq!(exp["lab"]["format"], "int64");
    assert_eq!(exp["lab"]["minimum"], 1.0);
    assert_eq!(exp["lab"]["maximum"], 99.0);
    let events = &schemas[0].1["properties"]["spec"]["properties"]["source"]["properties"]["knobs"]
        ["properties"]["events"];
    assert_eq!(events["format"], "int64");
    assert_eq!(events["minimum"], 0.0);
}
