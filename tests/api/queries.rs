//! Lookups, filters, sorts and Relay pagination through the running server,
//! on SQLite and PostgreSQL.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, create_opportunity, create_profile, seed};
use crate::on_both;

const PROFILE_PAGE: &str = "query($f: ProfileFilter, $o: [ProfileOrder!], $first: Int, $after: String, $last: Int, $before: String) {
  profiles(filter: $f, orderBy: $o, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id name status state annualRevenue nteeCodes organizationType updatedAt opportunitiesCount } }
  }
}";

const OPPORTUNITY_PAGE: &str = "query($f: OpportunityFilter, $o: [OpportunityOrder!], $first: Int, $after: String, $last: Int, $before: String) {
  opportunities(filter: $f, orderBy: $o, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { id profileId overallScore closeDate awardFloor awardCeiling organizationName currentStage priorityLevel source userRating discoveryDate tags notes }
  }
}";

/// Every row of a list, walked forwards `size` at a time.
async fn walk_forward(
    app: &TestApp,
    query: &str,
    field: &str,
    filter: Value,
    order: Value,
    size: i64,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app
            .data(
                query,
                json!({ "f": filter, "o": order, "first": size, "after": after }),
            )
            .await;
        let conn = &data[field];
        let page: Vec<Value> = match conn.get("edges") {
            Some(edges) => edges
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .collect(),
            None => conn["nodes"].as_array().unwrap().clone(),
        };
        rows.extend(page);
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return rows;
        }
        let next = conn["pageInfo"]["endCursor"].clone();
        assert_ne!(next, after, "the cursor does not move: {rows:?}");
        after = next;
    }
}

/// Every row of a list, walked backwards from the end.
async fn walk_backward(
    app: &TestApp,
    query: &str,
    field: &str,
    filter: Value,
    order: Value,
    size: i64,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut before = Value::Null;
    loop {
        let data = app
            .data(
                query,
                json!({ "f": filter, "o": order, "last": size, "before": before }),
            )
            .await;
        let conn = &data[field];
        let page: Vec<Value> = match conn.get("edges") {
            Some(edges) => edges
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .collect(),
            None => conn["nodes"].as_array().unwrap().clone(),
        };
        rows.splice(0..0, page);
        if !conn["pageInfo"]["hasPreviousPage"].as_bool().unwrap() {
            return rows;
        }
        let next = conn["pageInfo"]["startCursor"].clone();
        assert_ne!(next, before, "the cursor does not move: {rows:?}");
        before = next;
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks that `rows` are sorted by `key` (nulls last), ties broken by id.
fn assert_sorted(rows: &[Value], key: &str, descending: bool) {
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0][key], &pair[1][key]);
        let ordering = match (a, b) {
            (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
            (Value::Null, _) => panic!("null {key} before a value: {pair:?}"),
            (_, Value::Null) => continue,
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap()
                .partial_cmp(&y.as_f64().unwrap())
                .unwrap(),
            // Text sorts whatever its case; the rows here are ASCII, which
            // both databases fold alike.
            (Value::String(x), Value::String(y)) => {
                x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase())
            }
            other => panic!("unexpected values {other:?}"),
        };
        let ordering = if descending {
            ordering.reverse()
        } else {
            ordering
        };
        match ordering {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => assert!(
                pair[0]["id"].as_str() < pair[1]["id"].as_str(),
                "tie not broken by id: {pair:?}"
            ),
            std::cmp::Ordering::Greater => {
                panic!("not sorted by {key} (desc: {descending}): {pair:?}")
            }
        }
    }
}

async fn paging_visits_every_profile_once(app: &TestApp) {
    seed(app, 45, 2).await;
    let all = walk_forward(
        app,
        PROFILE_PAGE,
        "profiles",
        json!({ "includeArchived": true }),
        Value::Null,
        500,
    )
    .await;
    assert_eq!(all.len(), 45);
    let orders = [
        (json!([{ "field": "NAME" }]), "name", false),
        (json!([{ "field": "UPDATED_AT" }]), "updatedAt", true),
        (
            json!([{ "field": "ANNUAL_REVENUE", "direction": "ASC" }]),
            "annualRevenue",
            false,
        ),
        (
            json!([{ "field": "ANNUAL_REVENUE" }]),
            "annualRevenue",
            true,
        ),
        (
            json!([{ "field": "OPPORTUNITIES_COUNT" }]),
            "opportunitiesCount",
            true,
        ),
    ];
    for (order, key, descending) in orders {
        let forward = walk_forward(
            app,
            PROFILE_PAGE,
            "profiles",
            json!({ "includeArchived": true }),
            order.clone(),
            7,
        )
        .await;
        let backward = walk_backward(
            app,
            PROFILE_PAGE,
            "profiles",
            json!({ "includeArchived": true }),
            order.clone(),
            7,
        )
        .await;
        let unique: HashSet<String> = ids(&forward).into_iter().collect();
        assert_eq!(forward.len(), 45, "{order}");
        assert_eq!(unique.len(), 45, "{order}: a row repeated");
        assert_eq!(ids(&forward), ids(&backward), "{order}: backwards differs");
        assert_sorted(&forward, key, descending);
    }
}
on_both!(
    paging_visits_every_profile_once_,
    paging_visits_every_profile_once
);

async fn paging_visits_every_opportunity_once(app: &TestApp) {
    // With a multiple of 20 profiles the planned average holds exactly.
    seed(app, 20, 3).await;
    let total =
        app.data(OPPORTUNITY_PAGE, json!({ "first": 1 })).await["opportunities"]["totalCount"]
            .as_i64()
            .unwrap();
    assert_eq!(total, 60);
    let orders = [
        (json!([{ "field": "OVERALL_SCORE" }]), "overallScore", true),
        (json!([{ "field": "CLOSE_DATE" }]), "closeDate", false),
        (
            json!([{ "field": "CLOSE_DATE", "direction": "DESC" }]),
            "closeDate",
            true,
        ),
        (json!([{ "field": "AWARD_CEILING" }]), "awardCeiling", true),
        (
            json!([{ "field": "ORGANIZATION_NAME" }, { "field": "OVERALL_SCORE" }]),
            "organizationName",
            false,
        ),
        (
            json!([{ "field": "DISCOVERY_DATE" }]),
            "discoveryDate",
            true,
        ),
    ];
    for (order, key, descending) in orders {
        let forward = walk_forward(
            app,
            OPPORTUNITY_PAGE,
            "opportunities",
            Value::Null,
            order.clone(),
            5,
        )
        .await;
        let backward = walk_backward(
            app,
            OPPORTUNITY_PAGE,
            "opportunities",
            Value::Null,
            order.clone(),
            5,
        )
        .await;
        assert_eq!(forward.len(), 60, "{order}");
        assert_eq!(
            ids(&forward).into_iter().collect::<HashSet<_>>().len(),
            60,
            "{order}: a row repeated"
        );
        assert_eq!(ids(&forward), ids(&backward), "{order}: backwards differs");
        if key != "organizationName" {
            assert_sorted(&forward, key, descending);
        }
    }
}
on_both!(
    paging_visits_every_opportunity_once_,
    paging_visits_every_opportunity_once
);

async fn cursors_are_stable_under_inserts(app: &TestApp) {
    seed(app, 10, 1).await;
    let order = json!([{ "field": "NAME" }]);
    let first = app
        .data(PROFILE_PAGE, json!({ "o": order, "first": 4 }))
        .await;
    let seen: Vec<String> = first["profiles"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    // A row that sorts before everything seen so far.
    create_profile(app, json!({ "name": "AAA First Of All" })).await;
    let after = first["profiles"]["pageInfo"]["endCursor"].clone();
    let rest = walk_forward_from(app, order, after).await;
    for id in &rest {
        assert!(!seen.contains(id), "row {id} repeated after an insert");
    }
    assert_eq!(
        seen.len() + rest.len(),
        app.data(PROFILE_PAGE, json!({ "first": 1 })).await["profiles"]["totalCount"]
            .as_i64()
            .unwrap() as usize
            - 1
    );
}
on_both!(
    cursors_are_stable_under_inserts_,
    cursors_are_stable_under_inserts
);

async fn walk_forward_from(app: &TestApp, order: Value, mut after: Value) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let data = app
            .data(
                PROFILE_PAGE,
                json!({ "o": order, "first": 3, "after": after }),
            )
            .await;
        out.extend(
            data["profiles"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        if !data["profiles"]["pageInfo"]["hasNextPage"]
            .as_bool()
            .unwrap()
        {
            return out;
        }
        after = data["profiles"]["pageInfo"]["endCursor"].clone();
    }
}

async fn profile_filters_match_a_brute_force_check(app: &TestApp) {
    seed(app, 80, 1).await;
    let all = walk_forward(
        app,
        PROFILE_PAGE,
        "profiles",
        json!({ "includeArchived": true }),
        Value::Null,
        500,
    )
    .await;
    let count = |f: Value| async move {
        let data = app
            .data(PROFILE_PAGE, json!({ "f": f, "first": 500 }))
            .await;
        let rows = data["profiles"]["edges"].as_array().unwrap().len() as i64;
        assert_eq!(
            rows,
            data["profiles"]["totalCount"].as_i64().unwrap(),
            "totalCount matches the rows"
        );
        rows
    };
    let expect = |pred: &dyn Fn(&Value) -> bool| all.iter().filter(|p| pred(p)).count() as i64;
    let visible = |p: &Value| p["status"] != "ARCHIVED";
    assert!(
        expect(&|p| p["status"] == "ARCHIVED") > 0,
        "the data set has archived profiles"
    );
    assert_eq!(
        count(Value::Null).await,
        expect(&visible),
        "archived hidden by default"
    );
    assert_eq!(
        count(json!({ "statuses": ["ARCHIVED"] })).await,
        expect(&|p| p["status"] == "ARCHIVED")
    );
    assert_eq!(
        count(json!({ "statuses": ["DRAFT", "TEMPLATE"] })).await,
        expect(&|p| p["status"] == "DRAFT" || p["status"] == "TEMPLATE")
    );
    let state = all[0]["state"].as_str().unwrap().to_owned();
    assert_eq!(
        count(json!({ "states": [state.to_lowercase()] })).await,
        expect(&|p| visible(p) && p["state"] == state.as_str())
    );
    assert_eq!(
        count(json!({ "organizationTypes": ["FOUNDATION"] })).await,
        expect(&|p| visible(p) && p["organizationType"] == "FOUNDATION")
    );
    let code = all[0]["nteeCodes"][0].as_str().unwrap().to_owned();
    let has_code = |p: &Value, c: &str| p["nteeCodes"].as_array().unwrap().iter().any(|x| x == c);
    assert_eq!(
        count(json!({ "nteeCodes": [code] })).await,
        expect(&|p| visible(p) && has_code(p, &code))
    );
    let group = code[..1].to_owned();
    let has_group = |p: &Value| {
        p["nteeCodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().starts_with(&group))
    };
    assert_eq!(
        count(json!({ "nteeMajorGroups": [group.clone()] })).await,
        expect(&|p| visible(p) && has_group(p))
    );
    let in_range = |p: &Value| {
        p["annualRevenue"]
            .as_i64()
            .is_some_and(|r| (1_000_000..=20_000_000).contains(&r))
    };
    assert_eq!(
        count(json!({ "revenueMin": 1_000_000, "revenueMax": 20_000_000 })).await,
        expect(&|p| visible(p) && in_range(p))
    );
    let word = all[0]["name"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let has_word = |p: &Value| {
        p["name"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains(&word.to_lowercase())
    };
    assert!(
        count(json!({ "search": word.to_uppercase() })).await
            >= expect(&|p| visible(p) && has_word(p))
    );
}
on_both!(
    profile_filters_match_a_brute_force_check_,
    profile_filters_match_a_brute_force_check
);

async fn opportunity_filters_match_a_brute_force_check(app: &TestApp) {
    seed(app, 40, 6).await;
    let all = walk_forward(
        app,
        OPPORTUNITY_PAGE,
        "opportunities",
        Value::Null,
        Value::Null,
        500,
    )
    .await;
    assert_eq!(all.len(), 240);
    let count = |f: Value| async move {
        let data = app
            .data(OPPORTUNITY_PAGE, json!({ "f": f, "first": 500 }))
            .await;
        let rows = data["opportunities"]["nodes"].as_array().unwrap().len() as i64;
        assert_eq!(rows, data["opportunities"]["totalCount"].as_i64().unwrap());
        rows
    };
    let expect = |pred: &dyn Fn(&Value) -> bool| all.iter().filter(|o| pred(o)).count() as i64;
    let pid = all[0]["profileId"].as_str().unwrap().to_owned();
    assert_eq!(
        count(json!({ "profileIds": [pid] })).await,
        expect(&|o| o["profileId"] == pid.as_str())
    );
    assert_eq!(
        count(json!({ "stages": ["DISCOVERY", "TARGETS"] })).await,
        expect(&|o| o["currentStage"] == "DISCOVERY" || o["currentStage"] == "TARGETS")
    );
    assert_eq!(
        count(json!({ "priorityLevels": ["URGENT"] })).await,
        expect(&|o| o["priorityLevel"] == "URGENT")
    );
    assert_eq!(
        count(json!({ "sources": ["STATE"] })).await,
        expect(&|o| o["source"] == "STATE")
    );
    let score = |o: &Value| o["overallScore"].as_f64().unwrap();
    assert_eq!(
        count(json!({ "scoreMin": 0.25, "scoreMax": 0.75 })).await,
        expect(&|o| (0.25..=0.75).contains(&score(o)))
    );
    let date = |o: &Value| o["closeDate"].as_str().map(str::to_owned);
    assert_eq!(
        count(json!({ "closeDateFrom": "2026-06-01", "closeDateTo": "2026-09-30" })).await,
        expect(&|o| date(o).is_some_and(|d| ("2026-06-01".."2026-10-01").contains(&d.as_str())))
    );
    let overlaps = |o: &Value| {
        let floor = o["awardFloor"].as_i64().or(o["awardCeiling"].as_i64());
        let ceiling = o["awardCeiling"].as_i64().or(o["awardFloor"].as_i64());
        matches!((floor, ceiling), (Some(f), Some(c)) if c >= 100_000 && f <= 150_000)
    };
    assert_eq!(
        count(json!({ "awardMin": 100_000, "awardMax": 150_000 })).await,
        expect(&overlaps)
    );
    assert_eq!(
        count(json!({ "ratingMin": 4 })).await,
        expect(&|o| o["userRating"].as_i64().is_some_and(|r| r >= 4))
    );
    let tagged = |o: &Value| o["tags"].as_array().unwrap().iter().any(|t| t == "rural");
    assert!(count(json!({ "search": "RURAL" })).await >= expect(&tagged));
    // A deadline window relative to today.
    let today = chrono::Utc::now().date_naive();
    let soon = today + chrono::Duration::days(30);
    let expected_soon =
        expect(&|o| date(o).is_some_and(|d| d >= today.to_string() && d <= soon.to_string()));
    assert_eq!(
        count(json!({ "closingWithinDays": 30 })).await,
        expected_soon
    );
}
on_both!(
    opportunity_filters_match_a_brute_force_check_,
    opportunity_filters_match_a_brute_force_check
);

async fn lookups_by_id_and_ein(app: &TestApp) {
    let id = create_profile(
        app,
        json!({ "name": "Harbor Youth Alliance", "ein": "12-3456789", "state": "ca" }),
    )
    .await;
    let opp = create_opportunity(
        app,
        json!({ "profileId": id, "organizationName": "Kresge Foundation", "overallScore": 0.8 }),
    )
    .await;
    let q = "query($id: ID!, $ein: String!, $opp: ID!) { profile(id: $id) { name state } profileByEin(ein: $ein) { id ein } opportunity(id: $opp) { overallScore profile { id } } }";
    for ein in ["12-3456789", "123456789"] {
        let data = app
            .data(q, json!({ "id": id, "ein": ein, "opp": opp }))
            .await;
        assert_eq!(
            data,
            json!({
                "profile": { "name": "Harbor Youth Alliance", "state": "CA" },
                "profileByEin": { "id": id, "ein": "123456789" },
                "opportunity": { "overallScore": 0.8, "profile": { "id": id } }
            })
        );
    }
    let missing = app
        .data(
            q,
            json!({ "id": "profile_000000000000", "ein": "98-7654321", "opp": "opp_000000000000" }),
        )
        .await;
    assert_eq!(
        missing,
        json!({ "profile": null, "profileByEin": null, "opportunity": null })
    );
    assert_eq!(
        app.error_code("{ profileByEin(ein: \"12-34\") { id } }", Value::Null)
            .await,
        "BAD_USER_INPUT"
    );
}
on_both!(lookups_by_id_and_ein_, lookups_by_id_and_ein);

async fn bad_paging_and_filters_are_user_errors(app: &TestApp) {
    seed(app, 3, 1).await;
    for (vars, what) in [
        (json!({ "first": 501 }), "first over the maximum"),
        (json!({ "first": -1 }), "negative first"),
        (json!({ "last": 501 }), "last over the maximum"),
        (json!({ "first": 2, "last": 2 }), "first with last"),
        (
            json!({ "first": 2, "after": "bm90IGEgY3Vyc29y" }),
            "invalid cursor",
        ),
        (json!({ "f": { "states": ["XX"] } }), "unknown state"),
        (json!({ "f": { "nteeCodes": ["1AB"] } }), "bad NTEE code"),
        (
            json!({ "f": { "revenueMin": 10, "revenueMax": 5 } }),
            "inverted range",
        ),
        (
            json!({ "f": { "search": "x".repeat(201) } }),
            "overlong search",
        ),
    ] {
        let body = app.gql(PROFILE_PAGE, vars).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{what}: {body}"
        );
    }
    // A cursor from one ordering is refused by another.
    let by_name = app
        .data(
            PROFILE_PAGE,
            json!({ "o": [{ "field": "NAME" }], "first": 1 }),
        )
        .await;
    let cursor = by_name["profiles"]["pageInfo"]["endCursor"].clone();
    let body = app
        .gql(PROFILE_PAGE, json!({ "first": 1, "after": cursor }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    for vars in [
        json!({ "f": { "scoreMin": 1.5 } }),
        json!({ "f": { "ratingMin": 0 } }),
        json!({ "f": { "closingWithinDays": -1 } }),
    ] {
        let body = app.gql(OPPORTUNITY_PAGE, vars.clone()).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{vars}: {body}"
        );
    }
}
on_both!(
    bad_paging_and_filters_are_user_errors_,
    bad_paging_and_filters_are_user_errors
);

/// A failed field is null; when its type may not be null, so is its parent,
/// up to the nearest field that may be, or `data` itself (the spec's
/// "Handling Field Errors"). Never a key left out.
async fn field_errors_null_the_nearest_field_that_may_be_null(app: &TestApp) {
    seed(app, 2, 2).await;
    let ids = app
        .data("{ profiles(first: 2) { nodes { id } } }", json!({}))
        .await;
    let id = ids["profiles"]["nodes"][0]["id"].clone();
    // `profile` may be null; its `opportunities` may not.
    let body = app
        .gql(
            "query($id: ID!) { p: profile(id: $id) { name opportunities(first: -1) { totalCount } } \
             q: profile(id: $id) { name } }",
            json!({ "id": id }),
        )
        .await;
    // Present, and null: a key left out would read as null here too.
    assert_eq!(body["data"].get("p"), Some(&Value::Null), "{body}");
    assert!(body["data"]["q"]["name"].is_string(), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["p", "opportunities"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // `profiles` may not be null either: the null reaches `data`.
    let body = app
        .gql(
            "{ a: profiles(first: 1) { totalCount } b: profiles(first: -1) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(body.get("data"), Some(&Value::Null), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["b"]));
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    // Mutations may be null: a failed one leaves the others' answers.
    let opportunity = app
        .data(
            "query($id: ID!) { profile(id: $id) { opportunities(first: 1) { nodes { id } } } }",
            json!({ "id": id }),
        )
        .await["profile"]["opportunities"]["nodes"][0]["id"]
        .clone();
    let body = app
        .gql(
            "mutation($id: ID!) { a: moveOpportunityStage(id: $id, stage: TARGETS) { id } \
             b: moveOpportunityStage(id: \"opp_missing\", stage: TARGETS) { id } }",
            json!({ "id": opportunity }),
        )
        .await;
    assert_eq!(body["data"]["a"]["id"], opportunity, "{body}");
    assert_eq!(body["data"].get("b"), Some(&Value::Null), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["b"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let moved = app
        .data(
            "query($id: ID!) { opportunity(id: $id) { currentStage } }",
            json!({ "id": opportunity }),
        )
        .await;
    assert_eq!(moved["opportunity"]["currentStage"], "TARGETS");
}
on_both!(
    field_errors_null_the_nearest_field_that_may_be_null_,
    field_errors_null_the_nearest_field_that_may_be_null
);

async fn search_text_is_data_never_sql(app: &TestApp) {
    create_profile(app, json!({ "name": "100% Kids_Club" })).await;
    create_profile(app, json!({ "name": "1000 Kids Club" })).await;
    let search = |s: &str| app.data(PROFILE_PAGE, json!({ "f": { "search": s }, "first": 10 }));
    assert_eq!(
        search("'; DROP TABLE profiles; --").await["profiles"]["totalCount"],
        0
    );
    assert_eq!(search("\" OR 1=1 --").await["profiles"]["totalCount"], 0);
    // LIKE wildcards are taken literally.
    assert_eq!(search("100%").await["profiles"]["totalCount"], 1);
    assert_eq!(search("kids_club").await["profiles"]["totalCount"], 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM profiles").await,
        2,
        "table intact"
    );
}
on_both!(
    search_text_is_data_never_sql_,
    search_text_is_data_never_sql
);

/// An empty filter list sets no condition, as the schema says: the same
/// rows as the list left out.
async fn empty_filter_lists_set_no_condition(app: &TestApp) {
    let id = create_profile(app, json!({ "name": "Harbor Fund", "state": "OR" })).await;
    create_profile(app, json!({ "name": "Bay Arts" })).await;
    create_opportunity(
        app,
        json!({ "profileId": id, "organizationName": "Funder" }),
    )
    .await;
    let total = |query: &'static str| async move {
        let data = app.data(query, Value::Null).await;
        data.as_object().unwrap().values().next().unwrap()["totalCount"].clone()
    };
    assert_eq!(
        total("{ profiles(filter: { states: [], nteeCodes: [] }) { totalCount } }").await,
        2
    );
    assert_eq!(
        total("{ opportunities(filter: { profileIds: [], stages: [] }) { totalCount } }").await,
        1
    );
}
on_both!(
    empty_filter_lists_set_no_condition_,
    empty_filter_lists_set_no_condition
);

/// A search finds text where it is, not in how it is stored: digits in a
/// phrase are not looked for among EINs, and tags are matched one by one,
/// not as the JSON list that holds them.
async fn search_matches_values_not_their_storage(app: &TestApp) {
    let route = create_profile(app, json!({ "name": "Route 66 Arts" })).await;
    create_profile(app, json!({ "name": "Harbor Fund", "ein": "66-0443477" })).await;
    let profiles = |s: &'static str| async move {
        app.data(PROFILE_PAGE, json!({ "f": { "search": s }, "first": 10 }))
            .await["profiles"]["totalCount"]
            .clone()
    };
    assert_eq!(
        profiles("Route 66").await,
        1,
        "the phrase, not EINs with 66"
    );
    assert_eq!(profiles("66").await, 2, "digits alone: names and EINs");
    assert_eq!(profiles("66-0443").await, 1, "part of an EIN as written");

    for tags in [json!([]), json!(["say \"hi\"", "urban"]), json!(["a,b"])] {
        create_opportunity(
            app,
            json!({ "profileId": route, "organizationName": "Funder", "tags": tags }),
        )
        .await;
    }
    let opportunities = |s: &'static str| async move {
        app.data(
            "query($s: String) { opportunities(filter: { search: $s }) { totalCount } }",
            json!({ "s": s }),
        )
        .await["opportunities"]["totalCount"]
            .clone()
    };
    assert_eq!(opportunities("[").await, 0, "JSON brackets are no tag");
    assert_eq!(opportunities("\"").await, 1, "a quote inside a tag");
    assert_eq!(opportunities("SAY \"HI\"").await, 1);
    assert_eq!(opportunities("\\\"hi").await, 0, "JSON escapes are no tag");
    assert_eq!(opportunities("\",\"").await, 0, "nor what separates tags");
    assert_eq!(opportunities("a,b").await, 1, "a comma inside a tag");
    assert_eq!(opportunities("URB").await, 1);
}
on_both!(
    search_matches_values_not_their_storage_,
    search_matches_values_not_their_storage
);

/// Names sort alphabetically whatever their case (imported names are often
/// all capitals), ties by id, and pages walked either way through cursors
/// agree with one page of everything; so do funders' names.
async fn names_sort_whatever_their_case(app: &TestApp) {
    let names = [
        "apple", "Banana", "APRICOT", "cherry", "ACME", "Acme", "acme", "aCmE",
    ];
    let mut profile_ids = Vec::new();
    for name in names {
        profile_ids.push(create_profile(app, json!({ "name": name })).await);
    }
    let holder = &profile_ids[0];
    for name in names {
        create_opportunity(
            app,
            json!({ "profileId": holder, "organizationName": name }),
        )
        .await;
    }
    let expected = |descending: bool| {
        let mut want: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
        want.sort();
        if descending {
            want.reverse();
        }
        want
    };
    let lists = [
        (PROFILE_PAGE, "profiles", json!({}), "NAME", "name"),
        (
            OPPORTUNITY_PAGE,
            "opportunities",
            json!({ "profileIds": [holder] }),
            "ORGANIZATION_NAME",
            "organizationName",
        ),
    ];
    for (query, field, filter, order_field, key) in lists {
        for (direction, descending) in [("ASC", false), ("DESC", true)] {
            let order = json!([{ "field": order_field, "direction": direction }]);
            let whole = walk_forward(app, query, field, filter.clone(), order.clone(), 50).await;
            let folded: Vec<String> = whole
                .iter()
                .map(|row| row[key].as_str().unwrap().to_lowercase())
                .collect();
            assert_eq!(folded, expected(descending), "{field} {direction}");
            assert_sorted(&whole, key, descending);
            let forward = walk_forward(app, query, field, filter.clone(), order.clone(), 2).await;
            let backward = walk_backward(app, query, field, filter.clone(), order, 3).await;
            assert_eq!(
                ids(&forward),
                ids(&whole),
                "{field} {direction}: forward pages"
            );
            assert_eq!(
                ids(&backward),
                ids(&whole),
                "{field} {direction}: backward pages"
            );
        }
    }
}
on_both!(
    names_sort_whatever_their_case_,
    names_sort_whatever_their_case
);

/// Names with letters beyond ASCII are found as written, and in any case
/// of their ASCII letters.
async fn search_finds_names_beyond_ascii(app: &TestApp) {
    create_profile(app, json!({ "name": "École des Beaux-Arts de Montréal" })).await;
    create_profile(app, json!({ "name": "Fundación Niños" })).await;
    let total = |s: &'static str| async move {
        app.data(PROFILE_PAGE, json!({ "f": { "search": s }, "first": 10 }))
            .await["profiles"]["totalCount"]
            .clone()
    };
    assert_eq!(total("École").await, 1);
    assert_eq!(total("montréal").await, 1);
    assert_eq!(total("FUNDACIóN NIñOS").await, 1);
}
on_both!(
    search_finds_names_beyond_ascii_,
    search_finds_names_beyond_ascii
);

async fn nested_lists_are_per_profile(app: &TestApp) {
    let a = create_profile(app, json!({ "name": "A" })).await;
    let b = create_profile(app, json!({ "name": "B" })).await;
    create_profile(app, json!({ "name": "C (none)" })).await;
    for (profile, score, stage) in [
        (&a, 0.9, "TARGETS"),
        (&a, 0.5, "DISCOVERY"),
        (&a, 0.7, "TARGETS"),
        (&b, 0.3, "DISCOVERY"),
    ] {
        create_opportunity(app, json!({ "profileId": profile, "organizationName": format!("F{score}"), "overallScore": score, "currentStage": stage })).await;
    }
    let data = app
        .data(
            "{ profiles(orderBy: [{field: NAME}]) { nodes { name opportunitiesCount targets: opportunitiesCount(filter: {stages: [TARGETS]})
               opportunities(first: 2) { totalCount pageInfo { hasNextPage } nodes { overallScore } } } } }",
            Value::Null,
        )
        .await;
    assert_eq!(
        data["profiles"]["nodes"],
        json!([
            { "name": "A", "opportunitiesCount": 3, "targets": 2, "opportunities": { "totalCount": 3, "pageInfo": { "hasNextPage": true }, "nodes": [{ "overallScore": 0.9 }, { "overallScore": 0.7 }] } },
            { "name": "B", "opportunitiesCount": 1, "targets": 0, "opportunities": { "totalCount": 1, "pageInfo": { "hasNextPage": false }, "nodes": [{ "overallScore": 0.3 }] } },
            { "name": "C (none)", "opportunitiesCount": 0, "targets": 0, "opportunities": { "totalCount": 0, "pageInfo": { "hasNextPage": false }, "nodes": [] } }
        ])
    );
}
on_both!(nested_lists_are_per_profile_, nested_lists_are_per_profile);

/// The names of an object type's fields, by introspection.
async fn field_names(app: &TestApp, type_name: &str) -> Vec<String> {
    let data = app
        .data(
            "query($t: String!) { __type(name: $t) { fields { name } } }",
            json!({ "t": type_name }),
        )
        .await;
    data["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Nested pages read only the columns their selection asks for: every field
/// of `Opportunity`, asked alone (under `nodes`, or under `edges.node`
/// through a fragment, in two orders), answers as the whole row does, which
/// `opportunity(id:)` reads.
async fn nested_rows_hold_every_field_asked_for(app: &TestApp) {
    seed(app, 40, 6).await;
    let fields = field_names(app, "Opportunity").await;
    assert!(fields.len() >= 18, "{fields:?}");
    for field in fields {
        let selection = if field == "profile" {
            "profile { id name }".to_owned()
        } else {
            field.clone()
        };
        let query = format!(
            "{{ profiles(first: 10) {{ nodes {{
                a: opportunities(first: 5, orderBy: [{{field: CLOSE_DATE}}]) {{ nodes {{ {selection} }} }}
                ia: opportunities(first: 5, orderBy: [{{field: CLOSE_DATE}}]) {{ nodes {{ id }} }}
                b: opportunities(first: 5) {{ edges {{ node {{ ...F }} }} }}
                ib: opportunities(first: 5) {{ nodes {{ id }} }}
            }} }} }}
            fragment F on Opportunity {{ {selection} }}"
        );
        let data = app.data(&query, Value::Null).await;
        let (mut nested, mut ids) = (Vec::new(), Vec::new());
        for profile in data["profiles"]["nodes"].as_array().unwrap() {
            for (rows, id_rows) in [("a", "ia"), ("b", "ib")] {
                let values = profile[rows]["nodes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| {
                        let edges = profile[rows]["edges"].as_array().unwrap();
                        edges.iter().map(|e| e["node"].clone()).collect()
                    });
                let of = profile[id_rows]["nodes"].as_array().unwrap();
                assert_eq!(values.len(), of.len(), "{field}");
                nested.extend(values);
                ids.extend(of.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
            }
        }
        // Some value to compare: a placeholder (empty, null) would pass for
        // a field whose rows all hold one.
        assert!(
            nested
                .iter()
                .any(|v| v[&field] != Value::Null && v[&field] != json!([])),
            "{field}: no row has a value: {data}"
        );
        // Whole rows, 20 per request (the root-field limit).
        for (chunk, values) in ids.chunks(20).zip(nested.chunks(20)) {
            let whole = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| format!(r#"o{i}: opportunity(id: "{id}") {{ {selection} }}"#))
                .collect::<Vec<_>>()
                .join(" ");
            let whole = app.data(&format!("{{ {whole} }}"), Value::Null).await;
            for (i, value) in values.iter().enumerate() {
                assert_eq!(value, &whole[format!("o{i}")], "{field} of {}", chunk[i]);
            }
        }
    }
}
on_both!(
    nested_rows_hold_every_field_asked_for_,
    nested_rows_hold_every_field_asked_for
);

/// Profile pages read only the columns their selection asks for: every
/// field of `Profile`, asked alone (under `nodes`, or under `edges.node`
/// through a fragment), answers as the whole row does, which `profile(id:)`
/// reads; and pages that select only ids resume after their cursors in every
/// order as one page twice their size does.
async fn profile_rows_hold_every_field_asked_for(app: &TestApp) {
    seed(app, 30, 3).await;
    let fields = field_names(app, "Profile").await;
    assert!(fields.len() >= 18, "{fields:?}");
    for field in fields {
        let selection = if field == "opportunities" {
            "opportunities { totalCount }".to_owned()
        } else {
            field.clone()
        };
        let query = format!(
            "{{ a: profiles(first: 20) {{ nodes {{ id {selection} }} }}
                b: profiles(first: 20, orderBy: [{{field: NAME}}]) {{ edges {{ node {{ id ...F }} }} }} }}
            fragment F on Profile {{ {selection} }}"
        );
        let data = app.data(&query, Value::Null).await;
        let mut rows: Vec<Value> = data["a"]["nodes"].as_array().unwrap().clone();
        rows.extend(
            data["b"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone()),
        );
        assert_eq!(rows.len(), 40, "{field}");
        assert!(
            rows.iter()
                .any(|v| v[&field] != Value::Null && v[&field] != json!([])),
            "{field}: no row has a value: {data}"
        );
        for chunk in rows.chunks(20) {
            let whole = chunk
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    format!(
                        r#"p{i}: profile(id: "{}") {{ id {selection} }}"#,
                        row["id"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            let whole = app.data(&format!("{{ {whole} }}"), Value::Null).await;
            for (i, row) in chunk.iter().enumerate() {
                assert_eq!(row, &whole[format!("p{i}")], "{field}");
            }
        }
    }
    for order in [
        "UPDATED_AT",
        "NAME",
        "CREATED_AT",
        "ANNUAL_REVENUE",
        "OPPORTUNITIES_COUNT",
    ] {
        let ids = |page: &Value| -> Vec<String> {
            page["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let query = format!(
            "query($after: String, $n: Int) {{ profiles(first: $n, after: $after, orderBy: [{{field: {order}}}]) {{
                pageInfo {{ endCursor }} nodes {{ id }} }} }}"
        );
        let first = app.data(&query, json!({ "n": 7 })).await;
        let after = first["profiles"]["pageInfo"]["endCursor"].clone();
        let second = app.data(&query, json!({ "n": 7, "after": after })).await;
        let whole = app
            .data(
                &format!(
                    "{{ profiles(first: 14, orderBy: [{{field: {order}}}]) {{ nodes {{ id name city \
                     createdAt updatedAt annualRevenue opportunitiesCount }} }} }}"
                ),
                Value::Null,
            )
            .await;
        let mut walked = ids(&first["profiles"]);
        walked.extend(ids(&second["profiles"]));
        assert_eq!(walked, ids(&whole["profiles"]), "{order}");
    }
}
on_both!(
    profile_rows_hold_every_field_asked_for_,
    profile_rows_hold_every_field_asked_for
);

/// Every edge's cursor (encoded only when asked for) starts the next page
/// right after its row, and pageInfo's cursors are the first and last edges'.
async fn opportunity_edge_cursors_resume_after_their_row(app: &TestApp) {
    seed(app, 10, 6).await;
    let page = "query($after: String, $n: Int) { opportunities(first: $n, after: $after, orderBy: [{field: CLOSE_DATE}]) {
        pageInfo { startCursor endCursor } edges { cursor node { id } } } }";
    let data = app.data(page, json!({ "n": 8 })).await;
    let edges = data["opportunities"]["edges"].as_array().unwrap().clone();
    assert_eq!(edges.len(), 8);
    let info = &data["opportunities"]["pageInfo"];
    assert_eq!(info["startCursor"], edges[0]["cursor"]);
    assert_eq!(info["endCursor"], edges[7]["cursor"]);
    for (i, edge) in edges.iter().enumerate().take(6) {
        let next = app
            .data(page, json!({ "n": 2, "after": edge["cursor"] }))
            .await;
        let ids: Vec<&Value> = next["opportunities"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["node"]["id"])
            .collect();
        assert_eq!(
            ids,
            vec![&edges[i + 1]["node"]["id"], &edges[i + 2]["node"]["id"]],
            "after edge {i}"
        );
    }
    // Nested pages hand out the same cursors as the root list for the same rows.
    let nested = app
        .data(
            "{ profiles(first: 1) { nodes { opportunities(first: 3, orderBy: [{field: CLOSE_DATE}]) { edges { cursor node { id profileId } } } } } }",
            Value::Null,
        )
        .await;
    for edge in nested["profiles"]["nodes"][0]["opportunities"]["edges"]
        .as_array()
        .unwrap()
    {
        let filter = json!({ "profileIds": [edge["node"]["profileId"]] });
        let root = app
            .data(
                "query($f: OpportunityFilter) { opportunities(first: 20, filter: $f, orderBy: [{field: CLOSE_DATE}]) { edges { cursor node { id } } } }",
                json!({ "f": filter }),
            )
            .await;
        let same = root["opportunities"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["id"] == edge["node"]["id"])
            .unwrap();
        assert_eq!(same["cursor"], edge["cursor"]);
    }
}
on_both!(
    opportunity_edge_cursors_resume_after_their_row_,
    opportunity_edge_cursors_resume_after_their_row
);

/// Times finer than a microsecond are stored cut to the microsecond, which
/// is what cursors carry: paging by discovery date visits each row once, in
/// both directions, root and nested (it looped on the first row when SQLite
/// kept nanoseconds).
async fn sub_microsecond_times_page_once(app: &TestApp) {
    let profile = create_profile(
        app,
        json!({ "name": "Nanos", "organizationType": "NONPROFIT" }),
    )
    .await;
    let mut created = Vec::new();
    for (name, at) in [
        ("A", "2020-01-01T00:00:00.000000100Z"),
        ("B", "2020-01-01T00:00:00.000000900Z"),
        ("C", "2020-01-01T00:00:00.000000500Z"),
        ("D", "2020-01-01T00:00:00.000001999Z"),
        // A leap second, kept as the last microsecond of 23:59:59.
        ("E", "2016-12-31T23:59:60.9Z"),
        ("F", "2017-01-01T00:00:00.5Z"),
    ] {
        let input = json!({ "profileId": profile, "organizationName": name, "discoveryDate": at });
        created.push(create_opportunity(app, input).await);
    }
    let filter = json!({ "profileIds": [profile] });
    for direction in ["ASC", "DESC"] {
        let order = json!([{ "field": "DISCOVERY_DATE", "direction": direction }]);
        let forward = walk_forward(
            app,
            OPPORTUNITY_PAGE,
            "opportunities",
            filter.clone(),
            order.clone(),
            1,
        )
        .await;
        let backward = walk_backward(
            app,
            OPPORTUNITY_PAGE,
            "opportunities",
            filter.clone(),
            order.clone(),
            1,
        )
        .await;
        assert_eq!(forward.len(), 6, "{forward:?}");
        assert_eq!(ids(&forward), ids(&backward));
        let seen: HashSet<String> = ids(&forward).into_iter().collect();
        assert_eq!(seen, created.iter().cloned().collect::<HashSet<_>>());
        let times: Vec<&str> = forward
            .iter()
            .map(|r| r["discoveryDate"].as_str().unwrap())
            .collect();
        for time in &times {
            let fraction = time.split('.').nth(1).unwrap_or("");
            let digits = fraction.chars().take_while(char::is_ascii_digit).count();
            assert!(digits <= 6, "finer than a microsecond: {times:?}");
        }
        assert!(
            times.contains(&"2016-12-31T23:59:59.999999+00:00"),
            "{times:?}"
        );

        let mut nested = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = app
                .data(
                    "query($id: ID!, $o: [OpportunityOrder!], $after: String) { profile(id: $id) { opportunities(first: 1, orderBy: $o, after: $after) { pageInfo { hasNextPage endCursor } nodes { id } } } }",
                    json!({ "id": profile, "o": order, "after": after }),
                )
                .await;
            let conn = &data["profile"]["opportunities"];
            nested.extend(conn["nodes"].as_array().unwrap().iter().cloned());
            assert!(nested.len() <= 6, "paged past the rows: {nested:?}");
            if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
                break;
            }
            after = conn["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(ids(&nested), ids(&forward));
    }
}
on_both!(
    sub_microsecond_times_page_once_,
    sub_microsecond_times_page_once
);

/// A float variable is stored and answered as the double it names: the
/// nearest one, not one a unit in the last place away.
async fn float_variables_round_trip(app: &TestApp) {
    let profile = create_profile(
        app,
        json!({ "name": "Floats", "organizationType": "NONPROFIT" }),
    )
    .await;
    for score in [
        0.9999999999999999_f64,
        0.12345678901234566,
        5e-324,
        0.30000000000000004,
    ] {
        let body = format!(
            r#"{{"query": "mutation($i: CreateOpportunityInput!) {{ createOpportunity(input: $i) {{ id overallScore confidenceLevel }} }}", "variables": {{"i": {{"profileId": "{profile}", "organizationName": "F", "overallScore": {score:?}, "confidenceLevel": {score:?}}}}}}}"#
        );
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(crate::helpers::EDITOR_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap();
        let created = &answer["data"]["createOpportunity"];
        assert_eq!(created["overallScore"].as_f64(), Some(score), "{answer}");
        assert_eq!(created["confidenceLevel"].as_f64(), Some(score), "{answer}");
        let id = created["id"].as_str().unwrap();
        let stored = app
            .data(
                "query($id: ID!) { opportunity(id: $id) { overallScore } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(stored["opportunity"]["overallScore"].as_f64(), Some(score));
    }
}
on_both!(float_variables_round_trip_, float_variables_round_trip);

/// An argument refused under a page of profiles is reported at the field
/// that has it, for each profile, as under a single profile.
async fn nested_argument_errors_carry_their_own_path(app: &TestApp) {
    seed(app, 2, 1).await;
    for (field, selection) in [
        ("opportunities", "opportunities(first: 501) { totalCount }"),
        (
            "opportunitiesCount",
            "opportunitiesCount(filter: { scoreMin: 3 })",
        ),
        (
            "opportunities",
            "opportunities(after: \"zz\") { totalCount }",
        ),
    ] {
        let body = app
            .gql(
                &format!("{{ profiles(first: 2) {{ nodes {{ id {selection} }} }} }}"),
                Value::Null,
            )
            .await;
        // One error or one per profile: a list may stop at its first.
        let errors = body["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{body:#}");
        for error in errors {
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body:#}");
            let path = error["path"].as_array().expect("a path");
            assert_eq!(path.len(), 4, "{body:#}");
            assert_eq!(path[..2], [json!("profiles"), json!("nodes")], "{body:#}");
            assert!(path[2].is_u64(), "{body:#}");
            assert_eq!(path[3], field, "{body:#}");
        }
    }
}
on_both!(
    nested_argument_errors_carry_their_own_path_,
    nested_argument_errors_carry_their_own_path
);

/// Amounts past GraphQL's 32-bit `Int` (a large organisation's revenue) are
/// taken and answered exactly, as the `Dollars` scalar, up to 2^53 - 1.
async fn amounts_past_32_bits_round_trip(app: &TestApp) {
    let revenue = 9_007_199_254_740_991_i64;
    let profile = create_profile(
        app,
        json!({ "name": "Large", "organizationType": "NONPROFIT", "annualRevenue": revenue }),
    )
    .await;
    let opportunity = create_opportunity(
        app,
        json!({ "profileId": profile, "organizationName": "F", "awardFloor": 3_000_000_000_i64, "awardCeiling": 5_000_000_000_i64 }),
    )
    .await;
    let data = app
        .data(
            "query($p: ID!, $o: ID!, $min: Dollars) { profile(id: $p) { annualRevenue } opportunity(id: $o) { awardFloor awardCeiling } profiles(filter: { revenueMin: $min }) { nodes { id } } }",
            json!({ "p": profile, "o": opportunity, "min": revenue }),
        )
        .await;
    assert_eq!(data["profile"]["annualRevenue"].as_i64(), Some(revenue));
    assert_eq!(
        data["opportunity"]["awardFloor"].as_i64(),
        Some(3_000_000_000)
    );
    assert_eq!(
        data["opportunity"]["awardCeiling"].as_i64(),
        Some(5_000_000_000)
    );
    assert_eq!(data["profiles"]["nodes"], json!([{ "id": profile }]));
}
on_both!(
    amounts_past_32_bits_round_trip_,
    amounts_past_32_bits_round_trip
);
