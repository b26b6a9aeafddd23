//! Every mutation, its validation errors, and that a refused write changes nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, create_opportunity, create_profile};
use crate::on_both;

async fn profile_life_cycle(app: &TestApp) {
    let id = create_profile(app, json!({ "name": "  Summit Arts Council ", "ein": "12-3456789", "nteeCodes": ["a20"], "focusAreas": ["arts"], "annualRevenue": 250000 })).await;
    assert!(
        id.starts_with("profile_") && id.len() == "profile_".len() + 12,
        "{id}"
    );
    let q = "query($id: ID!) { profile(id: $id) { name ein nteeCodes focusAreas annualRevenue status organizationType city createdAt updatedAt } }";
    let created = app.data(q, json!({ "id": id })).await["profile"].clone();
    assert_eq!(created["name"], "Summit Arts Council");
    assert_eq!(created["ein"], "123456789");
    assert_eq!(created["nteeCodes"], json!(["A20"]));
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["organizationType"], "NONPROFIT");

    let updated = app
        .data(
            "mutation($id: ID!) { updateProfile(id: $id, input: { city: \"Salem\", annualRevenue: null, status: DRAFT, websiteUrl: \"www.summit-arts.org\" }) { city annualRevenue status name websiteUrl updatedAt } }",
            json!({ "id": id }),
        )
        .await["updateProfile"]
        .clone();
    assert_eq!(updated["city"], "Salem");
    assert_eq!(updated["annualRevenue"], Value::Null);
    assert_eq!(updated["status"], "DRAFT");
    assert_eq!(
        updated["websiteUrl"], "www.summit-arts.org",
        "a bare host is kept as written"
    );
    assert_eq!(
        updated["name"], "Summit Arts Council",
        "omitted fields stay"
    );
    assert!(
        updated["updatedAt"].as_str() > created["updatedAt"].as_str(),
        "updatedAt maintained"
    );
    // The same values again write nothing: the profile keeps its place.
    let (again, statements) = app
        .statements_of(app.data(
            "mutation($id: ID!) { updateProfile(id: $id, input: { city: \"Salem\", status: DRAFT }) { updatedAt } }",
            json!({ "id": id }),
        ))
        .await;
    assert_eq!(again["updateProfile"]["updatedAt"], updated["updatedAt"]);
    assert_eq!(statements, 1, "the read, no UPDATE");

    let deleted = app
        .data(
            "mutation($id: ID!) { deleteProfile(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["deleteProfile"], id.as_str());
    assert_eq!(
        app.data(q, json!({ "id": id })).await["profile"],
        Value::Null
    );
    assert_eq!(
        app.error_code(
            "mutation($id: ID!) { deleteProfile(id: $id) }",
            json!({ "id": id })
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(
            "mutation { updateProfile(id: \"nope\", input: {city: \"X\"}) { id } }",
            Value::Null
        )
        .await,
        "NOT_FOUND"
    );
}
on_both!(profile_life_cycle_, profile_life_cycle);

async fn invalid_profiles_are_refused_and_nothing_is_written(app: &TestApp) {
    create_profile(app, json!({ "name": "Taken", "ein": "111111111" })).await;
    let create = "mutation($input: CreateProfileInput!) { createProfile(input: $input) { id } }";
    for (input, code) in [
        (json!({ "name": "" }), "BAD_USER_INPUT"),
        (json!({ "name": "x".repeat(301) }), "BAD_USER_INPUT"),
        (json!({ "name": "A", "ein": "12345" }), "BAD_USER_INPUT"),
        (json!({ "name": "A", "state": "ZZ" }), "BAD_USER_INPUT"),
        (
            json!({ "name": "A", "nteeCodes": ["B2"] }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "name": "A", "annualRevenue": -5 }),
            "BAD_USER_INPUT",
        ),
        (json!({ "name": "A", "ein": "11-1111111" }), "CONFLICT"),
    ] {
        let body = app.gql(create, json!({ "input": input })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{input}: {body}"
        );
        assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty());
    }
    // A blank item of a list is named by its place, not as an empty list.
    let body = app
        .gql(
            create,
            json!({ "input": { "name": "A", "focusAreas": ["arts", " "] } }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["message"], "focusAreas[1] must not be empty",
        "{body}"
    );
    // Unknown enum values fail validation.
    let body = app
        .gql(
            create,
            json!({ "input": { "name": "A", "status": "DELETED" } }),
        )
        .await;
    assert!(
        body["errors"][0]["extensions"]["code"].is_string(),
        "{body}"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM profiles").await,
        1,
        "nothing written"
    );
}
on_both!(
    invalid_profiles_are_refused_and_nothing_is_written_,
    invalid_profiles_are_refused_and_nothing_is_written
);

async fn opportunity_life_cycle(app: &TestApp) {
    let profile = create_profile(app, json!({ "name": "P" })).await;
    let id = create_opportunity(app, json!({ "profileId": profile, "organizationName": "Mott Foundation", "awardFloor": 1000, "awardCeiling": 5000, "closeDate": "2027-01-15", "tags": ["capital"] })).await;
    assert!(id.starts_with("opp_"));
    let moved = app
        .data("mutation($id: ID!) { moveOpportunityStage(id: $id, stage: CANDIDATES) { currentStage } }", json!({ "id": id }))
        .await;
    assert_eq!(moved["moveOpportunityStage"]["currentStage"], "CANDIDATES");
    let stamp = |body: &Value| body["moveOpportunityStage"]["updatedAt"].clone();
    let moves =
        "mutation($id: ID!) { moveOpportunityStage(id: $id, stage: CANDIDATES) { updatedAt } }";
    let first = app.data(moves, json!({ "id": id })).await;
    let second = app.data(moves, json!({ "id": id })).await;
    assert_eq!(
        stamp(&first),
        stamp(&second),
        "a move to its own stage writes nothing"
    );
    let updated = app
        .data(
            "mutation($id: ID!) { updateOpportunity(id: $id, input: { overallScore: 0.66, userRating: 4, closeDate: null, priorityLevel: HIGH }) { overallScore userRating closeDate priorityLevel awardCeiling tags } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        updated["updateOpportunity"],
        json!({ "overallScore": 0.66, "userRating": 4, "closeDate": null, "priorityLevel": "HIGH", "awardCeiling": 5000, "tags": ["capital"] })
    );
    let bad = [
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { awardFloor: 9000 }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { overallScore: 1.01 }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { userRating: 6 }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { confidenceLevel: -0.1 }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { ein: \"abc\" }) { id } }",
        // Fields that always have a value cannot be cleared.
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { overallScore: null }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { tags: null }) { id } }",
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { currentStage: null }) { id } }",
    ];
    for q in bad {
        assert_eq!(
            app.error_code(q, json!({ "id": id })).await,
            "BAD_USER_INPUT",
            "{q}"
        );
    }
    let after = app
        .data(
            "query($id: ID!) { opportunity(id: $id) { overallScore awardFloor } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        after["opportunity"],
        json!({ "overallScore": 0.66, "awardFloor": 1000 }),
        "refused updates changed nothing"
    );
    assert_eq!(
        app.error_code("mutation { createOpportunity(input: { profileId: \"profile_missing00000\", organizationName: \"F\" }) { id } }", Value::Null).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.data(
            "mutation($id: ID!) { deleteOpportunity(id: $id) }",
            json!({ "id": id })
        )
        .await["deleteOpportunity"],
        id.as_str()
    );
    assert_eq!(
        app.error_code(
            "mutation($id: ID!) { deleteOpportunity(id: $id) }",
            json!({ "id": id })
        )
        .await,
        "NOT_FOUND"
    );
    // Deleting a profile takes its opportunities with it.
    create_opportunity(
        app,
        json!({ "profileId": profile, "organizationName": "F2" }),
    )
    .await;
    app.data(
        "mutation($id: ID!) { deleteProfile(id: $id) }",
        json!({ "id": profile }),
    )
    .await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM opportunities").await, 0);
}
on_both!(opportunity_life_cycle_, opportunity_life_cycle);

async fn batches_are_all_or_nothing(app: &TestApp) {
    let batch =
        "mutation($inputs: [CreateProfileInput!]!) { createProfiles(inputs: $inputs) { id name } }";
    let good: Vec<Value> = (0..50)
        .map(|i| json!({ "name": format!("Org {i}"), "ein": format!("{:09}", 500_000_000 + i) }))
        .collect();
    let data = app.data(batch, json!({ "inputs": good })).await;
    assert_eq!(data["createProfiles"].as_array().unwrap().len(), 50);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 50);

    let mut mixed: Vec<Value> = (0..5)
        .map(|i| json!({ "name": format!("New {i}") }))
        .collect();
    mixed[1] = json!({ "name": "Bad", "state": "QQ" });
    mixed[3] = json!({ "name": "Bad", "ein": "1" });
    let body = app.gql(batch, json!({ "inputs": mixed })).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        message.contains("inputs[1]")
            && message.contains("inputs[3]")
            && !message.contains("inputs[0]"),
        "{message}"
    );

    // Every bad item is named in `extensions.items`, however many; the
    // message names those it has room for and counts the rest.
    let mut many: Vec<Value> = (0..300).map(|_| json!({ "name": "" })).collect();
    many[150] = json!({ "name": "Fine" });
    let body = app.gql(batch, json!({ "inputs": many })).await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    let items = error["extensions"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 299);
    assert_eq!(
        items[0],
        json!({ "index": 0, "message": "name must not be empty" })
    );
    assert_eq!(items[150]["index"], 151);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("inputs[0]: name must not be empty; inputs[1]: "),
        "{message}"
    );
    assert!(
        message.contains("more (extensions.items lists all 299)"),
        "{message}"
    );
    assert!(message.chars().count() <= 1000, "{message}");

    let duplicate = json!([{ "name": "X", "ein": "777777777" }, { "name": "Y", "ein": "500000003" }, { "name": "Z", "ein": "77-7777777" }]);
    let body = app.gql(batch, json!({ "inputs": duplicate })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("inputs[1]") && message.contains("inputs[2]"),
        "{message}"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM profiles").await,
        50,
        "refused batches wrote nothing"
    );

    let owner = data["createProfiles"][0]["id"].as_str().unwrap();
    let opps = "mutation($inputs: [CreateOpportunityInput!]!) { createOpportunities(inputs: $inputs) { id } }";
    let inputs: Vec<Value> = (0..30).map(|i| json!({ "profileId": owner, "organizationName": format!("F{i}"), "overallScore": 0.5 })).collect();
    assert_eq!(
        app.data(opps, json!({ "inputs": inputs })).await["createOpportunities"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    let bad = json!([{ "profileId": owner, "organizationName": "ok" }, { "profileId": owner, "organizationName": "F", "awardFloor": 10, "awardCeiling": 1 }]);
    assert_eq!(
        app.error_code(opps, json!({ "inputs": bad })).await,
        "BAD_USER_INPUT"
    );
    let orphan = json!([{ "profileId": owner, "organizationName": "ok" }, { "profileId": "profile_nope00000000", "organizationName": "F" }]);
    assert_eq!(
        app.error_code(opps, json!({ "inputs": orphan })).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(opps, json!({ "inputs": [] })).await,
        "BAD_USER_INPUT"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM opportunities").await, 30);
}
on_both!(batches_are_all_or_nothing_, batches_are_all_or_nothing);

/// The mutations of one document run in order, and each result shows what
/// the ones before it wrote, also where an earlier result loaded the same
/// counts, pages or profile.
async fn each_mutation_sees_the_writes_before_it(app: &TestApp) {
    let id = create_profile(app, json!({ "name": "Harbor Fund" })).await;
    let doc = "mutation($id: ID!) {
        a: createOpportunity(input: { profileId: $id, organizationName: \"First\" }) { profile { opportunitiesCount opportunities(first: 5) { nodes { organizationName } } } }
        b: createOpportunity(input: { profileId: $id, organizationName: \"Second\" }) { profile { opportunitiesCount opportunities(first: 5) { nodes { organizationName } } } }
        c: updateProfile(id: $id, input: { name: \"Harbor Trust\" }) { name opportunitiesCount }
        d: createOpportunity(input: { profileId: $id, organizationName: \"Third\" }) { profile { name opportunitiesCount } }
    }";
    let data = app.data(doc, json!({ "id": id })).await;
    let names = |v: &Value| -> Vec<String> {
        v["opportunities"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["organizationName"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(data["a"]["profile"]["opportunitiesCount"], 1, "{data}");
    assert_eq!(names(&data["a"]["profile"]), ["First"]);
    assert_eq!(data["b"]["profile"]["opportunitiesCount"], 2, "{data}");
    assert_eq!(names(&data["b"]["profile"]).len(), 2, "{data}");
    assert_eq!(data["c"]["opportunitiesCount"], 2, "{data}");
    assert_eq!(data["d"]["profile"]["name"], "Harbor Trust", "{data}");
    assert_eq!(data["d"]["profile"]["opportunitiesCount"], 3, "{data}");

    let gone = create_opportunity(
        app,
        json!({ "profileId": id, "organizationName": "Gone", "overallScore": 1.0 }),
    )
    .await;
    let doc = "mutation($id: ID!, $gone: ID!) {
        before: updateProfile(id: $id, input: { city: \"Salem\" }) { opportunitiesCount opportunities(first: 1) { nodes { organizationName } } }
        deleteOpportunity(id: $gone)
        after: updateProfile(id: $id, input: { city: \"Salem\" }) { opportunitiesCount opportunities(first: 1) { nodes { organizationName } } }
    }";
    let data = app.data(doc, json!({ "id": id, "gone": gone })).await;
    assert_eq!(names(&data["before"]), ["Gone"], "{data}");
    assert_eq!(data["before"]["opportunitiesCount"], 4, "{data}");
    assert_ne!(names(&data["after"]), ["Gone"], "{data}");
    assert_eq!(data["after"]["opportunitiesCount"], 3, "{data}");
}
on_both!(
    each_mutation_sees_the_writes_before_it_,
    each_mutation_sees_the_writes_before_it
);
