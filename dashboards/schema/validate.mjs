// Validate every dashboard in dashboards/ against a JSON Schema generated, here and now, from
// the `Dashboard` type Grafana publishes in @grafana/schema (raw/dashboard/x/types.gen.d.ts),
// with ts-json-schema-generator; validation by ajv.
//
// The schema is strict: a property the published types do not declare is an error (a typo in
// a field name fails). One exception, explicit: the published `AnnotationQuery` has no room for
// a data source's own query fields (its `target` is typed for Grafana's built-in source, with a
// TODO saying it should be a normal query). Prometheus annotations carry theirs beside it, as
// Grafana's Prometheus annotation support and grafonnet write them: exactly these names are
// allowed, nothing else.
//
// Usage: node validate.mjs [--self-test]   (--self-test also checks broken dashboards fail)
import { createGenerator } from "ts-json-schema-generator";
import Ajv from "ajv";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dashboards = path.resolve(here, "..");
const types = path.join(here, "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts");
const PROMETHEUS_ANNOTATION_FIELDS = ["expr", "step", "titleFormat", "textFormat", "tagKeys", "useValueForTime"];

const schema = createGenerator({ path: types, type: "Dashboard", skipTypeCheck: true, additionalProperties: false })
  .createSchema("Dashboard");
const annotation = schema.definitions.AnnotationQuery;
for (const field of PROMETHEUS_ANNOTATION_FIELDS) {
  annotation.properties[field] = field === "useValueForTime" ? { type: "boolean" } : { type: "string" };
}
// The published AnnotationTarget only fits the built-in source; a data source query goes there too.
schema.definitions.AnnotationTarget = { type: "object", additionalProperties: {} };

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const version = JSON.parse(fs.readFileSync(path.join(here, "node_modules/@grafana/schema/package.json"))).version;

function errors(doc) {
  return validate(doc) ? [] : validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : ""}`);
}

let failures = 0;
const files = fs.readdirSync(dashboards).filter((f) => f.endsWith(".json")).sort();
if (files.length === 0) {
  console.log("no dashboards found");
  process.exit(1);
}
const uids = new Set();
for (const f of files) {
  const doc = JSON.parse(fs.readFileSync(path.join(dashboards, f), "utf8"));
  const problems = errors(doc);
  if (!doc.uid || uids.has(doc.uid)) problems.push(`uid missing or not unique: ${doc.uid}`);
  uids.add(doc.uid);
  const dsVar = (doc.templating?.list ?? []).find((v) => v.type === "datasource");
  if (!dsVar) problems.push("no datasource variable");
  for (const p of doc.panels ?? []) {
    if (p.type !== "row" && p.datasource?.uid !== "${datasource}") problems.push(`panel "${p.title}" does not use the datasource variable`);
  }
  if (problems.length) {
    failures++;
    console.log(`FAIL  ${f}`);
    for (const e of problems) console.log(`      ${e}`);
  } else {
    console.log(`ok    ${f} (uid ${doc.uid}, ${doc.panels.length} panels) against @grafana/schema ${version} Dashboard`);
  }
}

if (process.argv.includes("--self-test")) {
  const base = JSON.parse(fs.readFileSync(path.join(dashboards, files[0]), "utf8"));
  const broken = [
    ["a misspelled dashboard field", (d) => { d.titel = d.title; }],
    ["a schemaVersion that is not a number", (d) => { d.schemaVersion = "41"; }],
    ["a panel without a type", (d) => { delete d.panels[1].type; }],
    ["a gridPos without a width", (d) => { delete d.panels[1].gridPos.w; }],
    ["an unknown variable type", (d) => { d.templating.list[0].type = "spreadsheet"; }],
    ["an unknown annotation field", (d) => { d.annotations.list[0].colour = "red"; }],
  ];
  let caught = 0;
  for (const [what, mutate] of broken) {
    const d = structuredClone(base);
    mutate(d);
    if (errors(d).length === 0) {
      console.log(`SELF-TEST FAIL: a dashboard with ${what} passed`);
      failures++;
    } else caught++;
  }
  console.log(`self-test: ${caught} of ${broken.length} broken dashboards rejected`);
}
if (failures) {
  console.log(`${failures} problem(s)`);
  process.exit(1);
}
console.log("every dashboard is valid");
