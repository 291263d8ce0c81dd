//! The OpenAPI document is reviewed: any change to the API shows up as a snapshot diff.

#[test]
fn openapi_document_matches_snapshot() {
    let doc = serde_json::to_value(shopd::app::openapi()).expect("serializable");
    insta::assert_json_snapshot!("openapi", doc);
}
