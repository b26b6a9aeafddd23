//! Hostile and malformed requests: each gets a clear 4xx or a GraphQL error
//! with a code, the server answers the next request, and the data is the
//! same afterwards (an export's digest before and after every case).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Backend, EDITOR_KEY, READER_KEY, TestApp, create_profile, seed, spawn_app_with,
};

const GRJ: &str = "application/graphql-response+json";

/// One hostile request and what it must get.
struct Case {
    name: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: StatusCode,
    /// The error code it must carry; `None`: a plain answer without errors.
    code: Option<&'static str>,
}

impl Case {
    fn post(name: impl Into<String>, body: Value) -> Self {
        Self::raw(name, "application/json", body.to_string().into_bytes())
    }

    fn query(name: impl Into<String>, query: impl Into<String>) -> Self {
        Self::post(name, json!({ "query": query.into() }))
    }

    fn with_vars(name: impl Into<String>, query: &str, variables: Value) -> Self {
        Self::post(name, json!({ "query": query, "variables": variables }))
    }

    fn raw(name: impl Into<String>, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            method: Method::POST,
            path: "/graphql".into(),
            headers: vec![
                ("accept", GRJ.into()),
                ("content-type", content_type.into()),
            ],
            body: Some(body),
            status: StatusCode::BAD_REQUEST,
            code: None,
        }
    }

    fn get(name: impl Into<String>, path_and_query: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            method: Method::GET,
            path: path_and_query.into(),
            headers: vec![("accept", GRJ.into())],
            body: None,
            status: StatusCode::BAD_REQUEST,
            code: None,
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {key}")));
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = StatusCode::from_u16(status).unwrap();
        self.code = Some(code);
        self
    }

    /// Answered 200 with data and no error: input taken as plain data.
    fn plain(mut self) -> Self {
        self.status = StatusCode::OK;
        self.code = None;
        self
    }
}

/// `{ "errors": [{ "extensions": { "code" } }] }`, a batch's first item's, or REST's `code`.
fn code_of(body: &Value) -> Option<&str> {
    let body = match body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| body["code"].as_str())
}

const COMPLEXITY_WRAP: &str = "{ r0:profiles(first:500){nodes{...P3}} r1:profiles(first:500){nodes{...P3}} r2:profiles(first:500){nodes{...P3}} r3:profiles(first:500){nodes{...P3}} wrapA: profiles(first:2147483647) @skip(if:true) { nodes { w0:opportunities(first:2147483647){totalCount} w1:opportunities(first:2147483647){totalCount} w2:opportunities(first:2147483647){totalCount} wr:opportunities(first:2147479926){totalCount} } } wrapB: profiles(first:1815034020) @skip(if:true) { totalCount } } fragment P0 on Profile{id name} fragment P1 on Profile{o0:opportunities(first:500){nodes{profile{...P0}}} o1:opportunities(first:500){nodes{profile{...P0}}}} fragment P2 on Profile{o0:opportunities(first:500){nodes{profile{...P1}}} o1:opportunities(first:500){nodes{profile{...P1}}}} fragment P3 on Profile{o0:opportunities(first:500){nodes{profile{...P2}}} o1:opportunities(first:500){nodes{profile{...P2}}}}";

/// `root` and fragments `C0` to `C{length}` on the query root, each
/// spreading the next.
fn chain(root: &str, length: usize) -> String {
    let mut doc = root.to_owned();
    for i in 0..length {
        doc.push_str(&format!(" fragment C{i} on QueryRoot {{ ...C{} }}", i + 1));
    }
    doc.push_str(&format!(
        " fragment C{length} on QueryRoot {{ __typename }}"
    ));
    doc
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

/// `root` spreading `F0`, where each fragment `Fi` on `on` spreads `F(i+1)`
/// `spreads` times and `F(levels)` selects `leaf`: `spreads^levels` fields
/// once expanded, in a short document.
fn fan_out(root: &str, on: &str, leaf: &str, levels: usize, spreads: usize) -> String {
    let mut doc = format!("{root} fragment F{levels} on {on} {{ {leaf} }}");
    for i in 0..levels {
        let spread = format!("...F{}", i + 1);
        doc.push_str(&format!(
            " fragment F{i} on {on} {{ {} }}",
            vec![spread.as_str(); spreads].join(" ")
        ));
    }
    doc
}

fn cursor(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn cases(profile: &str, backend: Backend) -> Vec<Case> {
    let create = r#"mutation { createProfile(input: { name: "Hostile", organizationType: NONPROFIT }) { id } }"#;
    let create_with = |input: &str| {
        format!(
            "mutation {{ createProfile(input: {{ name: \"H\", organizationType: NONPROFIT, {input} }}) {{ id }} }}"
        )
    };
    let opportunity_with = |input: &str| {
        format!(
            "mutation {{ createOpportunity(input: {{ profileId: \"{profile}\", organizationName: \"H\", {input} }}) {{ id }} }}"
        )
    };
    let profiles_with = |args: &str| format!("{{ profiles({args}) {{ nodes {{ id }} }} }}");
    let opportunities_with =
        |args: &str| format!("{{ opportunities({args}) {{ nodes {{ id }} }} }}");
    let profile_search =
        "query($s: String) { profiles(filter: { search: $s }) { totalCount nodes { id } } }";
    let opportunity_search =
        "query($s: String) { opportunities(filter: { search: $s }) { totalCount nodes { id } } }";
    let many = |item: &str, n: usize| vec![item; n].join(" ");

    vec![
        // The body and its media type.
        Case::raw("malformed JSON", "application/json", b"{\"query\":".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("not JSON at all", "application/json", b"DROP TABLE profiles".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("empty body", "application/json", Vec::new()).expect(400, "BAD_REQUEST"),
        Case::raw("JSON null", "application/json", b"null".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("JSON string", "application/json", b"\"{ profiles { totalCount } }\"".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("trailing garbage", "application/json", b"{\"query\": \"{ __typename }\"} {}".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("text/plain", "text/plain", br#"{"query": "{ __typename }"}"#.to_vec()).expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Case::raw("form encoded", "application/x-www-form-urlencoded", b"query=%7B__typename%7D".to_vec()).expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Case::raw("multipart", "multipart/form-data; boundary=x", b"--x\r\n\r\n--x--".to_vec()).expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Case::raw("application/graphql", "application/graphql", b"{ __typename }".to_vec()).expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Case::raw("over the body limit", "application/json", format!("{{\"query\": \"{{ __typename }}\", \"x\": \"{}\"}}", "a".repeat(1_100_000)).into_bytes()).expect(413, "PAYLOAD_TOO_LARGE"),
        Case::raw("invalid UTF-8 in the body", "application/json", b"{\"query\": \"{ profiles(filter: {search: \\\"\xff\xfe\\\"}) { totalCount } }\"}".to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("lone surrogate escape", "application/json", br#"{"query": "{ __typename }", "operationName": "\ud800"}"#.to_vec()).expect(400, "BAD_REQUEST"),
        Case::raw("JSON nested 20,000 deep", "application/json", nested("[", "1", "]", 20_000).into_bytes()).expect(400, "BAD_REQUEST"),
        Case::raw("variables nested 20,000 deep", "application/json", format!("{{\"query\": \"{{ __typename }}\", \"variables\": {{\"v\": {}}}}}", nested("{\"a\":", "1", "}", 20_000)).into_bytes()).expect(400, "BAD_REQUEST"),
        Case::post("query is a number", json!({ "query": 42 })).expect(400, "BAD_REQUEST"),
        Case::post("variables is a string", json!({ "query": "{ __typename }", "variables": "{}" })).expect(400, "BAD_REQUEST"),
        Case::post("extensions is a list", json!({ "query": "{ __typename }", "extensions": [] })).expect(400, "BAD_REQUEST"),
        Case::post("empty batch", json!([])).expect(400, "BAD_REQUEST"),
        Case::post("batch of numbers", json!([1, 2])).expect(400, "BAD_REQUEST"),
        Case::post("batch over the limit", Value::Array(vec![json!({ "query": "{ __typename }" }); 1000])).expect(400, "BAD_REQUEST"),
        Case::query("accepts nothing we write", "{ __typename }").header("accept", "text/csv").expect(406, "NOT_ACCEPTABLE"),
        // GraphQL documents.
        Case::query("empty query", "").expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("unclosed selection", "{ profiles { nodes { id }").expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("unterminated string", "{ profileByEin(ein: \"12) { id } }").expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("100,000 nested braces", nested("{ a ", "", "}", 100_000)).expect(400, "GRAPHQL_PARSE_FAILED"),
        // Values nested 1,500 deep parsed, then overflowed a worker's stack.
        Case::query("list value 1,500 deep", format!("{{ __typename(a: {}) }}", nested("[", "1", "]", 1_500))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("object value 1,500 deep", format!("{{ profiles(filter: {{ search: {} }}) {{ totalCount }} }}", nested("{a: ", "1", "}", 1_500))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("directive argument 1,500 deep", format!("{{ __typename @skip(if: {}) }}", nested("[", "false", "]", 1_500))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("variable default 1,500 deep", format!("query($v: [String!] = {}) {{ __typename }}", nested("[", "\"a\"", "]", 1_500))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::get("list value 1,500 deep over GET", format!("/graphql?query={}", urlencode(&format!("{{ __typename(a: {}) }}", nested("[", "1", "]", 1_500))))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("nested list values", format!("{{ profiles(filter: {{ states: {} }}) {{ totalCount }} }}", nested("[", "\"CA\"", "]", 50_000))).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("past the depth limit", format!("{{ profiles {{ nodes {{ {} }} }} }}", nested("opportunities { nodes { profile { ", "id", " } } }", 5))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("introspection past the depth limit", format!("{{ __schema {{ types {{ {} }} }} }}", nested("fields { type { ", "name", " } }", 8))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("alias bomb at the root", format!("{{ {} }}", (0..500).map(|i| format!("a{i}: profiles {{ totalCount }}")).collect::<Vec<_>>().join(" "))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("alias bomb under a list", format!("{{ profiles(first: 500) {{ nodes {{ {} }} }} }}", (0..2000).map(|i| format!("a{i}: name")).collect::<Vec<_>>().join(" "))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("field bomb", format!("{{ profiles(first: 500) {{ nodes {{ {} }} }} }}", many("name", 20_000))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        // Fragment cycles are caught before anything follows them.
        Case::query("fragment cycle", "query { ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("self-referencing fragment", "query { profiles { nodes { ...P } } } fragment P on Profile { name ...P }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("unused fragment cycle", "{ __typename } fragment A on QueryRoot { ...A }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        // A chain of 20,000 fragments, each spreading the next: every walk
        // that follows spreads would go 20,000 calls deep.
        Case::query("long fragment chain", chain("{ ...C0 }", 20_000)).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::query("long unused fragment chain", chain("{ __typename }", 20_000)).expect(400, "GRAPHQL_PARSE_FAILED"),
        // Fields whose complexities add up past usize::MAX to a small total:
        // four 500-profile pages nesting pages of 500 (about 8e12), and two
        // skipped fields sized to wrap the sum round to near 0.
        Case::query("complexity wrapped round by skipped fields", COMPLEXITY_WRAP).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("fragment fan-out (billion laughs)", fan_out("query { profiles { nodes { ...F0 } } }", "Profile", "name", 25, 2)).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("fragment fan-out just under the field limit", fan_out("query { opportunity(id: \"x\") { ...F0 } }", "Opportunity", "id", 4, 14)).expect(200, ""),
        Case::query("fragment fan-out, 10^8 fields in 8 levels", fan_out("query { profiles { nodes { ...F0 } } }", "Profile", "name", 8, 10)).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("directive flood", format!("{{ profiles {{ totalCount {} }} }}", many("@skip(if: false)", 5_000))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("directive flood over many fields", format!("{{ profiles {{ nodes {{ {} }} }} }}", many("name @include(if: true)", 20_000))).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("unknown directive", "{ profiles @launch { totalCount } }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("unknown field", "{ profiles { nodes { passwordHash } } }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("two anonymous operations", "{ __typename } { __typename }").expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::post("unknown operation name", json!({ "query": "query A { __typename }", "operationName": "B" })).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("a subscription", "subscription { __typename }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::with_vars("variable of the wrong type", "query($n: Int) { profiles(first: $n) { totalCount } }", json!({ "n": "ten" })).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        // A required variable left out or null is a request error: nothing runs.
        Case::query("missing required variable", "query($id: ID!) { profile(id: $id) { id } }").expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::post("required variable null", json!({ "query": "query($id: ID!) { profile(id: $id) { id } }", "variables": { "id": null } })).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("mutations beside a missing required variable", "mutation($i: CreateProfileInput!) { createProfile(input: $i) { id } a: createProfile(input: { name: \"Runs anyway\", organizationType: NONPROFIT }) { id } }").key(EDITOR_KEY).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        // Filter lists and sort keys are bounded: each value is an SQL
        // variable or term, and 15,000 NTEE codes once overflowed a stack.
        Case::with_vars("15,000 NTEE codes", "query($c: [String!]) { profiles(filter: { nteeCodes: $c }) { totalCount } }", json!({ "c": vec!["B20"; 15_000] })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("15,000 NTEE major groups", "query($c: [String!]) { profiles(filter: { nteeMajorGroups: $c }) { totalCount } }", json!({ "c": vec!["B"; 15_000] })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("33,000 states", "query($s: [String!]) { profiles(filter: { states: $s }) { totalCount } }", json!({ "s": vec!["CA"; 33_000] })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("33,000 stages", "query($s: [Stage!]) { opportunities(filter: { stages: $s }) { totalCount } }", json!({ "s": vec!["TARGETS"; 33_000] })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("33,000 profile ids", "query($p: [ID!]) { opportunities(filter: { profileIds: $p }) { totalCount } }", json!({ "p": vec!["profile_000000000000"; 33_000] })).expect(200, "BAD_USER_INPUT"),
        Case::query("a sort key twice", profiles_with("orderBy: [{ field: NAME }, { field: NAME, direction: DESC }]")).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("5,000 sort keys after a cursor", "query($o: [ProfileOrder!], $a: String) { profiles(first: 2, orderBy: $o, after: $a) { totalCount } }", json!({ "o": vec![json!({ "field": "NAME" }); 5_000], "a": cursor(&format!("{{\"v\": [{}]}}", vec!["\"a\""; 5_001].join(","))) })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("2,000 nested sort keys", "query($o: [OpportunityOrder!]) { profiles(first: 1) { nodes { opportunities(orderBy: $o) { totalCount } } } }", json!({ "o": vec![json!({ "field": "OVERALL_SCORE" }); 2_000] })).expect(200, "BAD_USER_INPUT"),
        // Arguments out of range.
        Case::query("huge first", profiles_with("first: 1000000")).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("first past the page size", profiles_with("first: 501")).expect(200, "BAD_USER_INPUT"),
        Case::query("first past Int", profiles_with("first: 4294967296")).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("negative first", profiles_with("first: -1")).expect(200, "BAD_USER_INPUT"),
        Case::query("negative last", opportunities_with("last: -5")).expect(200, "BAD_USER_INPUT"),
        Case::query("first and last", profiles_with("first: 1, last: 1")).expect(200, "BAD_USER_INPUT"),
        Case::query("garbage cursor", profiles_with("first: 1, after: \"not a cursor\"")).expect(200, "BAD_USER_INPUT"),
        Case::query("cursor of junk JSON", profiles_with(&format!("first: 1, after: \"{}\"", cursor("{\"k\": [1e999, null]}")))).expect(200, "BAD_USER_INPUT"),
        Case::query("cursor with SQL", opportunities_with(&format!("first: 1, after: \"{}\"", cursor("'; DROP TABLE opportunities; --")))).expect(200, "BAD_USER_INPUT"),
        Case::query("closingWithinDays negative", opportunities_with("filter: { closingWithinDays: -3 }")).expect(200, "BAD_USER_INPUT"),
        Case::query("score range outside 0..1", opportunities_with("filter: { scoreMin: 1.5 }")).expect(200, "BAD_USER_INPUT"),
        Case::query("rating range outside 1..5", opportunities_with("filter: { ratingMax: 9 }")).expect(200, "BAD_USER_INPUT"),
        Case::query("invalid date", opportunities_with("filter: { closeDateFrom: \"2024-13-45\" }")).expect(200, "BAD_USER_INPUT"),
        Case::query("invalid state in a filter", profiles_with("filter: { states: [\"ZZ\"] }")).expect(200, "BAD_USER_INPUT"),
        Case::query("invalid NTEE code in a filter", profiles_with("filter: { nteeCodes: [\"12B\"] }")).expect(200, "BAD_USER_INPUT"),
        Case::query("unknown enum value", profiles_with("filter: { statuses: [DELETED] }")).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("unknown enum value as a string", profiles_with("filter: { statuses: [\"DELETED\"] }")).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::with_vars("unknown enum value in variables", "query($s: [ProfileStatus!]) { profiles(filter: { statuses: $s }) { totalCount } }", json!({ "s": ["active; DROP TABLE profiles"] })).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("malformed EIN lookup", "{ profileByEin(ein: \"12-34\") { id } }").expect(200, "BAD_USER_INPUT"),
        // Invalid writes, with a key that may write: refused on their merits.
        Case::query("invalid EIN", create_with("ein: \"ABCDEFGHI\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("invalid state", create_with("state: \"XX\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("invalid NTEE code", create_with("nteeCodes: [\"ZZZZZ\"]")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("negative revenue", create_with("annualRevenue: -1")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("revenue past 2^53", create_with("annualRevenue: 9007199254740992")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("revenue past 64 bits", create_with("annualRevenue: 9223372036854775808")).key(EDITOR_KEY).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("fractional revenue", create_with("annualRevenue: 1.5")).key(EDITOR_KEY).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("javascript: website", create_with("websiteUrl: \"javascript:alert(1)\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("javascript: website with a tab", create_with("websiteUrl: \" Java\\tScript:alert(1)\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("data: website", create_with("websiteUrl: \"data:text/html,<script>alert(1)</script>\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("name of 100,000 characters", format!("mutation {{ createProfile(input: {{ name: \"{}\", organizationType: NONPROFIT }}) {{ id }} }}", "n".repeat(100_000))).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("score above 1", opportunity_with("overallScore: 1.01")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("score out of float range", opportunity_with("overallScore: 1e400")).key(EDITOR_KEY).expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::with_vars("score NaN in variables", "mutation($s: Float) { createOpportunity(input: { profileId: \"x\", organizationName: \"H\", overallScore: $s }) { id } }", json!({ "s": "NaN" })).key(EDITOR_KEY).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("rating 6", opportunity_with("userRating: 6")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("rating 0", opportunity_with("userRating: 0")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("award floor above ceiling", opportunity_with("awardFloor: 10, awardCeiling: 5")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("impossible close date", opportunity_with("closeDate: \"2025-02-30\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("close date in year 0", opportunity_with("closeDate: \"0000-06-01\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("discovery date 5000 BC", opportunity_with("discoveryDate: \"-5000-01-01T00:00:00Z\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("last discovery in year 10,000", create_with("lastDiscoveryDate: \"+10000-01-01T00:00:00Z\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("close date window in year 20,000", opportunities_with("filter: { closeDateTo: \"+20000-01-01\" }")).expect(200, "BAD_USER_INPUT"),
        Case::query("NUL in notes", opportunity_with("notes: \"a\\u0000b\"")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("NUL in a name", "mutation($n: String!) { createProfile(input: { name: $n, organizationType: NONPROFIT }) { id } }", json!({ "n": "a\u{0}" })).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        // No id holds a NUL: SQLite finds none, PostgreSQL cannot compare it.
        match backend {
            Backend::Sqlite => Case::with_vars("NUL in an id", "query($id: ID!) { profile(id: $id) { id } }", json!({ "id": "profile_\u{0}" })).plain(),
            Backend::Postgres => Case::with_vars("NUL in an id", "query($id: ID!) { profile(id: $id) { id } }", json!({ "id": "profile_\u{0}" })).expect(200, "BAD_USER_INPUT"),
        },
        match backend {
            Backend::Sqlite => Case::get("REST NUL in an id", "/api/profiles/p%00").expect(404, "NOT_FOUND"),
            Backend::Postgres => Case::get("REST NUL in an id", "/api/profiles/p%00").expect(400, "BAD_USER_INPUT"),
        },
        Case::query("unknown stage", opportunity_with("currentStage: WON")).key(EDITOR_KEY).expect(400, "GRAPHQL_VALIDATION_FAILED"),
        Case::query("opportunity of a missing profile", "mutation { createOpportunity(input: { profileId: \"profile_000000000000\", organizationName: \"H\" }) { id } }").key(EDITOR_KEY).expect(200, "NOT_FOUND"),
        Case::with_vars("batch of 1,001 profiles", "mutation($i: [CreateProfileInput!]!) { createProfiles(inputs: $i) { id } }", json!({ "i": vec![json!({ "name": "B", "organizationType": "NONPROFIT" }); 1001] })).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("batch with one bad item", "mutation($i: [CreateProfileInput!]!) { createProfiles(inputs: $i) { id } }", json!({ "i": [{ "name": "Good", "organizationType": "NONPROFIT" }, { "name": "Bad", "organizationType": "NONPROFIT", "state": "QQ" }] })).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("null name in an update", format!("mutation {{ updateProfile(id: \"{profile}\", input: {{ name: null }}) {{ id }} }}")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("null organization type in an update", format!("mutation {{ updateProfile(id: \"{profile}\", input: {{ organizationType: null }}) {{ id }} }}")).key(EDITOR_KEY).expect(200, "BAD_USER_INPUT"),
        Case::query("update of a missing profile", "mutation { updateProfile(id: \"x' OR '1'='1\", input: { city: \"X\" }) { id } }").key(EDITOR_KEY).expect(200, "NOT_FOUND"),
        // Search text is data, never SQL.
        Case::with_vars("SQL in a profile search", profile_search, json!({ "s": "'; DROP TABLE profiles; --" })).plain(),
        Case::with_vars("SQL in an opportunity search", opportunity_search, json!({ "s": "x') OR 1=1 --" })).plain(),
        Case::with_vars("LIKE wildcards in a search", profile_search, json!({ "s": "%_%\\" })).plain(),
        Case::with_vars("control characters in a search", profile_search, json!({ "s": "a\u{7}b\u{1b}[2J" })).plain(),
        Case::with_vars("NUL in a search", opportunity_search, json!({ "s": "a\u{0}b" })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("search of 100,000 characters", profile_search, json!({ "s": "x".repeat(100_000) })).expect(200, "BAD_USER_INPUT"),
        Case::with_vars("UNION in an EIN", "query($e: String!) { profileByEin(ein: $e) { id } }", json!({ "e": "1 UNION SELECT 1" })).expect(200, "BAD_USER_INPUT"),
        // HTTP methods, GET and persisted queries.
        Case::get("mutation over GET", format!("/graphql?query={}", urlencode(create))).expect(405, "METHOD_NOT_ALLOWED"),
        // Percent-decoding replaces invalid UTF-8; the document then fails to parse.
        Case::get("invalid UTF-8 in the query string", "/graphql?query=%7B%FF%FE%7D").expect(400, "GRAPHQL_PARSE_FAILED"),
        Case::get("variables not JSON", "/graphql?query=%7B__typename%7D&variables=%7B").expect(400, "BAD_REQUEST"),
        Case::get("no query", "/graphql?operationName=A").expect(400, "BAD_REQUEST"),
        Case::post("persisted query with the wrong hash", json!({ "query": "{ __typename }", "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256("{ other }") } } })).expect(400, "BAD_REQUEST"),
        Case::post("persisted query version 2", json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": sha256("{ __typename }") } } })).expect(400, "BAD_REQUEST"),
        Case::post("persisted query hash not a string", json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": 7 } } })).expect(400, "BAD_REQUEST"),
        Case::post("unknown persisted query", json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "'; DROP TABLE profiles; --" } } })).expect(400, "PERSISTED_QUERY_NOT_FOUND"),
        Case {
            method: Method::PUT,
            ..Case::query("PUT", "{ __typename }").expect(405, "METHOD_NOT_ALLOWED")
        },
        Case {
            method: Method::DELETE,
            ..Case::get("REST DELETE", "/api/profiles/x").expect(405, "METHOD_NOT_ALLOWED")
        },
        Case::get("no such route", "/api/funders").expect(404, "NOT_FOUND"),
        // Credentials.
        Case::query("mutation without a key", create).expect(401, "UNAUTHENTICATED"),
        Case::query("mutation with a reader key", create).key(READER_KEY).expect(403, "FORBIDDEN"),
        Case::query("unknown key", "{ __typename }").key("guessed-key-0123456789abcdef").expect(401, "UNAUTHENTICATED"),
        Case::query("key with a quote", "{ __typename }").header("authorization", "Bearer ' OR '1'='1").expect(401, "UNAUTHENTICATED"),
        Case::query("Basic credentials", create).header("authorization", "Basic YWRtaW46YWRtaW4=").expect(401, "UNAUTHENTICATED"),
        Case::query("empty bearer", create).header("authorization", "Bearer ").expect(401, "UNAUTHENTICATED"),
        Case::query("cacheStats without a key", "{ cacheStats { entries } }").expect(200, "UNAUTHENTICATED"),
        Case::get("metrics without a key", "/metrics").expect(401, "UNAUTHENTICATED"),
        // REST.
        Case::get("REST negative limit", "/api/profiles?limit=-1").expect(400, "BAD_USER_INPUT"),
        Case::get("REST limit past u64", "/api/profiles?limit=99999999999999999999999").expect(400, "BAD_USER_INPUT"),
        Case::get("REST offset past i64", "/api/profiles?offset=9223372036854775808").expect(400, "BAD_USER_INPUT"),
        Case::get("REST unknown status", "/api/profiles?status=deleted").expect(400, "BAD_USER_INPUT"),
        Case::get("REST SQL in an id", format!("/api/profiles/{}", urlencode("x' OR '1'='1"))).expect(404, "NOT_FOUND"),
        Case::get("REST id of 10,000 characters", format!("/api/profiles/{}/opportunities", "p".repeat(10_000))).expect(404, "NOT_FOUND"),
        Case::get("REST invalid UTF-8 in the query string", "/api/profiles?status=%FF").expect(400, "BAD_USER_INPUT"),
    ]
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).unwrap()[1..].to_owned()
}

async fn send(app: &TestApp, case: &Case) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(case.method.clone(), app.url(&case.path))
        .timeout(Duration::from_secs(30));
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.name));
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_errors_and_change_nothing_on_sqlite() {
    hostile_requests_get_clear_errors_and_change_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_errors_and_change_nothing_on_postgres() {
    hostile_requests_get_clear_errors_and_change_nothing(Backend::Postgres).await;
}

async fn hostile_requests_get_clear_errors_and_change_nothing(backend: Backend) {
    let http = catalynx::config::HttpConfig {
        max_body_bytes: 1024 * 1024,
        ..Default::default()
    };
    let Some(app) = spawn_app_with(backend, Default::default(), http).await else {
        return;
    };
    seed(&app, 5, 3).await;
    let profile = create_profile(
        &app,
        json!({ "name": "Target", "organizationType": "NONPROFIT", "ein": "12-3456789" }),
    )
    .await;
    let before = app.digest().await;
    let cases = cases(&profile, backend);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, "");
    for case in &cases {
        let started = std::time::Instant::now();
        let (status, body) = send(&app, case).await;
        // A refusal is cheap: a slow one is a way to tie the server up.
        let elapsed = started.elapsed();
        slowest = slowest.max((elapsed, &case.name));
        // Only a pathological blow-up fails here (a fan-out bomb once took
        // minutes); ordinary slowness of a busy machine does not.
        if elapsed > Duration::from_secs(20) {
            failures.push(format!("{}: took {elapsed:?}", case.name));
        }
        let code = code_of(&body);
        let ok = status == case.status
            && match case.code {
                Some("") => true,
                Some(expected) => code == Some(expected),
                None => body["errors"].is_null() && !body["data"].is_null(),
            };
        if !ok {
            failures.push(format!(
                "{}: got {status} {code:?}, expected {} {:?}: {}",
                case.name,
                case.status,
                case.code,
                body.to_string().chars().take(300).collect::<String>()
            ));
        }
        // Still answering, and nothing changed.
        let next = app.data("{ __typename }", json!({})).await;
        assert_eq!(
            next,
            json!({ "__typename": "QueryRoot" }),
            "after {}",
            case.name
        );
        assert_eq!(app.digest().await, before, "{} changed the data", case.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} hostile requests answered, data unchanged; slowest: {} ({:?})",
        cases.len(),
        slowest.1,
        slowest.0
    );
    app.finish().await;
}
