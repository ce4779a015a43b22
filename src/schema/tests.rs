use serde_json::{Value, json};

use super::resources::CheckError;
use super::validator::SchemaError;
use super::validator::{lua_number, lua_quote};
use super::{ResourceKind, Schema, schema_def};

fn compile(schema: Value) -> Schema {
    Schema::compile(&schema).expect("test schema compiles")
}

/// The error for `value` against `schema`.
fn error(schema: Value, value: Value) -> String {
    let mut value = value;
    match compile(schema).validate(&mut value) {
        Ok(()) => panic!("expected a validation error for {value}"),
        Err(e) => e,
    }
}

/// `value` after a successful validation (defaults filled).
fn filled(schema: Value, value: Value) -> Value {
    let mut value = value;
    if let Err(e) = compile(schema).validate(&mut value) {
        panic!("unexpected validation error: {e}");
    }
    value
}

fn valid(schema: Value, value: Value) -> bool {
    compile(schema).validate_ref(&value).is_ok()
}

// ----- the samples the APISIX reference quotes ------------------------------------------------------------

fn aws_lambda_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "function_uri": {"type": "string"},
            "authorization": {
                "type": "object",
                "properties": {
                    "apikey": {"type": "string"},
                    "iam": {
                        "type": "object",
                        "properties": {
                            "accesskey": {"type": "string"},
                            "secretkey": {"type": "string"},
                            "aws_region": {"type": "string", "default": "us-east-1"},
                            "service": {"type": "string", "default": "execute-api"}
                        },
                        "required": ["accesskey", "secretkey"]
                    }
                }
            },
            "timeout": {"type": "integer", "minimum": 100, "default": 3000},
            "ssl_verify": {"type": "boolean", "default": true},
            "keepalive": {"type": "boolean", "default": true}
        },
        "required": ["function_uri"]
    })
}

#[test]
fn missing_required_property_is_reported_by_name() {
    assert_eq!(
        error(aws_lambda_schema(), json!({})),
        r#"property "function_uri" is required"#
    );
}

#[test]
fn nested_failures_are_wrapped_per_level() {
    let conf = json!({"function_uri": "https://x", "authorization": {"iam": {"secretkey": "s"}}});
    assert_eq!(
        error(aws_lambda_schema(), conf),
        r#"property "authorization" validation failed: property "iam" validation failed: property "accesskey" is required"#
    );
}

#[test]
fn property_type_errors_name_the_property() {
    assert_eq!(
        error(aws_lambda_schema(), json!({"function_uri": 123})),
        r#"property "function_uri" validation failed: wrong type: expected string, got number"#
    );
}

#[test]
fn minimum_message_matches_api7() {
    assert_eq!(
        error(
            aws_lambda_schema(),
            json!({"function_uri": "u", "timeout": 50})
        ),
        r#"property "timeout" validation failed: expected 50 to be greater than 100"#
    );
    assert_eq!(
        error(json!({"minimum": 100}), json!(50)),
        "expected 50 to be greater than 100"
    );
}

#[test]
fn defaults_are_filled_including_false_and_only_in_present_objects() {
    let conf = filled(aws_lambda_schema(), json!({"function_uri": "u"}));
    assert_eq!(
        conf,
        json!({"function_uri": "u", "timeout": 3000, "ssl_verify": true, "keepalive": true})
    );
    // `iam` absent: nothing is created inside `authorization`.
    let conf = filled(
        aws_lambda_schema(),
        json!({"function_uri": "u", "authorization": {}}),
    );
    assert_eq!(conf["authorization"], json!({}));
    // `iam` present: its defaults are filled.
    let conf = filled(
        aws_lambda_schema(),
        json!({"function_uri": "u", "authorization": {"iam": {"accesskey": "a", "secretkey": "s"}}}),
    );
    assert_eq!(conf["authorization"]["iam"]["aws_region"], "us-east-1");
    assert_eq!(conf["authorization"]["iam"]["service"], "execute-api");

    let schema = json!({"properties": {"flag": {"type": "boolean", "default": false}}});
    assert_eq!(filled(schema, json!({})), json!({"flag": false}));
}

#[test]
fn object_and_array_defaults_are_copied_and_existing_values_kept() {
    let schema = json!({
        "type": "object",
        "properties": {
            "headers": {"type": "object", "default": {"a": "b"}},
            "list": {"type": "array", "default": [1, 2]},
            "name": {"type": "string", "default": "x"},
            "nothing": {"default": null}
        }
    });
    assert_eq!(
        filled(schema.clone(), json!({"name": "kept"})),
        json!({"name": "kept", "headers": {"a": "b"}, "list": [1, 2]})
    );
    // Defaults are not filled into a value that is not an object.
    assert_eq!(
        filled(json!({"properties": {"a": {"default": 1}}}), json!("s")),
        json!("s")
    );
}

#[test]
fn defaults_are_not_validated_and_required_runs_first() {
    let schema = json!({"properties": {"a": {"type": "string", "default": 1}}, "required": ["a"]});
    assert_eq!(
        error(schema.clone(), json!({})),
        r#"property "a" is required"#
    );
    let schema = json!({"properties": {"a": {"type": "string", "default": 1}}});
    assert_eq!(filled(schema, json!({})), json!({"a": 1}));
}

#[test]
fn missing_required_is_reported_before_a_sibling_type_error() {
    let schema = json!({
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "required": ["b"]
    });
    assert_eq!(
        error(schema, json!({"a": 1})),
        r#"property "b" is required"#
    );
}

// ----- type -------------------------------------------------------------------------------------------------

#[test]
fn type_names_follow_lua() {
    assert_eq!(
        error(json!({"type": "string"}), json!(1)),
        "wrong type: expected string, got number"
    );
    assert_eq!(
        error(json!({"type": "string"}), json!(true)),
        "wrong type: expected string, got boolean"
    );
    assert_eq!(
        error(json!({"type": "string"}), json!({"a": 1})),
        "wrong type: expected string, got table"
    );
    assert_eq!(
        error(json!({"type": "object"}), json!([1])),
        "wrong type: expected object, got table"
    );
    assert_eq!(
        error(json!({"type": "number"}), json!("1")),
        "wrong type: expected number, got string"
    );
    assert_eq!(
        error(json!({"type": "string"}), json!(null)),
        "wrong type: expected string, got userdata"
    );
    assert_eq!(
        error(json!({"type": ["string", "array"]}), json!(1)),
        "wrong type: expected one of string, array, got number"
    );
}

#[test]
fn integers_are_numbers_without_a_fraction() {
    let schema = json!({"type": "integer"});
    assert!(valid(schema.clone(), json!(1)));
    assert!(valid(schema.clone(), json!(1.0)));
    assert!(valid(schema.clone(), json!(-3)));
    assert!(valid(schema.clone(), json!(u64::MAX)));
    assert_eq!(
        error(schema, json!(1.5)),
        "wrong type: expected integer, got number"
    );
    assert!(valid(json!({"type": "number"}), json!(2)));
}

#[test]
fn empty_object_passes_as_array_but_not_the_reverse() {
    assert!(valid(json!({"type": "array"}), json!({})));
    assert_eq!(
        error(json!({"type": "array", "minItems": 1}), json!({})),
        "expect array to have at least 1 items"
    );
    assert_eq!(
        error(json!({"type": "array"}), json!({"a": 1})),
        "wrong type: expected array, got table"
    );
    assert!(!valid(json!({"type": "object"}), json!([])));
    assert!(valid(json!({"type": "null"}), json!(null)));
    assert!(valid(json!({"type": "table"}), json!([])));
}

// ----- object keywords ------------------------------------------------------------------------------------

#[test]
fn additional_properties() {
    let schema = json!({"properties": {"a": {}}, "additionalProperties": false});
    assert_eq!(
        error(schema.clone(), json!({"a": 1, "x": 2})),
        "additional properties forbidden, found x"
    );
    assert!(valid(schema, json!({"a": 1})));
    let schema = json!({"properties": {"a": {}}, "additionalProperties": {"type": "integer"}});
    assert_eq!(
        error(schema, json!({"a": "s", "b": "t"})),
        r#"property "b" validation failed: wrong type: expected integer, got string"#
    );
}

#[test]
fn pattern_properties() {
    let schema = json!({
        "patternProperties": {"^x-": {"type": "string"}},
        "additionalProperties": false
    });
    assert!(valid(schema.clone(), json!({"x-a": "1"})));
    assert_eq!(
        error(schema.clone(), json!({"x-a": 1})),
        r#"property "x-a" validation failed: wrong type: expected string, got number"#
    );
    assert_eq!(
        error(schema, json!({"y": "1"})),
        "additional properties forbidden, found y"
    );
}

#[test]
fn property_counts() {
    assert_eq!(
        error(json!({"minProperties": 1}), json!({})),
        "expect object to have at least 1 properties"
    );
    assert_eq!(
        error(json!({"maxProperties": 1}), json!({"a": 1, "b": 2})),
        "expect object to have at most 1 properties"
    );
}

#[test]
fn dependencies() {
    let schema = json!({"dependencies": {"a": ["b"], "c": {"required": ["d"]}}});
    assert!(valid(schema.clone(), json!({"b": 1})));
    assert_eq!(
        error(schema.clone(), json!({"a": 1})),
        r#"property "b" is required when "a" is set"#
    );
    assert_eq!(
        error(schema, json!({"c": 1})),
        r#"failed to validate dependent schema for "c": property "d" is required"#
    );
}

#[test]
fn property_names() {
    assert_eq!(
        error(
            json!({"propertyNames": {"maxLength": 2}}),
            json!({"abc": 1})
        ),
        r#"property name "abc" validation failed: string too long, expected at most 2, got 3"#
    );
}

// ----- strings --------------------------------------------------------------------------------------------

#[test]
fn string_lengths_count_characters() {
    assert_eq!(
        error(json!({"type": "string", "minLength": 1}), json!("")),
        "string too short, expected at least 1, got 0"
    );
    assert_eq!(
        error(json!({"maxLength": 3}), json!("abcd")),
        "string too long, expected at most 3, got 4"
    );
    assert!(valid(json!({"maxLength": 3}), json!("äöü")));
}

#[test]
fn pattern_message_quotes_like_lua() {
    assert_eq!(
        error(json!({"pattern": "^[a-z]+$"}), json!("A1")),
        r#"failed to match pattern "^[a-z]+$" with "A1""#
    );
    // %q doubles backslashes in the pattern and escapes quotes in the value.
    assert_eq!(
        error(json!({"pattern": r"^[a-zA-Z0-9_\-]+$"}), json!("a\"b")),
        r#"failed to match pattern "^[a-zA-Z0-9_\\-]+$" with "a\"b""#
    );
    // The pattern is searched, not anchored.
    assert!(valid(json!({"pattern": "b"}), json!("abc")));
}

#[test]
fn formats() {
    assert!(valid(json!({"format": "ipv4"}), json!("10.0.0.1")));
    assert_eq!(
        error(json!({"format": "ipv4"}), json!("10.0.0")),
        "expect valid ipv4 address"
    );
    assert!(valid(json!({"format": "ipv6"}), json!("::1")));
    assert_eq!(
        error(json!({"format": "ipv6"}), json!("1.2.3.4")),
        "expect valid ipv6 address"
    );
    assert!(valid(
        json!({"format": "no-such-format"}),
        json!("anything")
    ));
    assert!(valid(json!({"format": "ipv4"}), json!(5)));
}

// ----- numbers ------------------------------------------------------------------------------------------

#[test]
fn number_bounds() {
    assert_eq!(
        error(json!({"maximum": 10}), json!(11)),
        "expected 11 to be smaller than 10"
    );
    assert_eq!(
        error(json!({"minimum": 0, "exclusiveMinimum": true}), json!(0)),
        "expected 0 to be strictly greater than 0"
    );
    assert_eq!(
        error(json!({"maximum": 5, "exclusiveMaximum": true}), json!(5)),
        "expected 5 to be strictly smaller than 5"
    );
    assert_eq!(
        error(json!({"exclusiveMinimum": 0}), json!(-1.5)),
        "expected -1.5 to be strictly greater than 0"
    );
    assert_eq!(
        error(json!({"exclusiveMaximum": 1}), json!(1.0)),
        "expected 1 to be strictly smaller than 1"
    );
    assert_eq!(
        error(json!({"multipleOf": 3}), json!(7)),
        "expected 7 to be a multiple of 3"
    );
    assert!(valid(json!({"multipleOf": 0.5}), json!(2.5)));
    assert!(valid(
        json!({"minimum": 1, "maximum": 2}),
        json!("not a number")
    ));
}

#[test]
fn numbers_print_like_lua_tostring() {
    assert_eq!(lua_number(50.0), "50");
    assert_eq!(lua_number(0.1), "0.1");
    assert_eq!(lua_number(-2.5), "-2.5");
    assert_eq!(lua_number(1e15), "1e+15");
    assert_eq!(lua_number(123_456_789_012_345.0), "1.2345678901234e+14");
    assert_eq!(lua_number(12_345_678_901_234.0), "12345678901234");
    assert_eq!(lua_number(0.0001), "0.0001");
    assert_eq!(lua_number(0.00001), "1e-05");
    assert_eq!(lua_number(1.0 / 3.0), "0.33333333333333");
}

#[test]
fn lua_quote_escapes() {
    assert_eq!(lua_quote("a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(lua_quote("a\nb"), "\"a\\\nb\"");
    assert_eq!(lua_quote("\r\u{0}1"), r#""\r\0001""#);
}

// ----- enum, const, arrays ----------------------------------------------------------------------------

#[test]
fn enum_and_const() {
    let schema = json!({"enum": ["a", 1, {"k": [1]}]});
    assert!(valid(schema.clone(), json!(1.0)));
    assert!(valid(schema.clone(), json!({"k": [1]})));
    assert_eq!(error(schema, json!("b")), "matches none of the enum values");
    assert_eq!(
        error(json!({"const": 1}), json!(2)),
        "failed to check const value"
    );
}

#[test]
fn array_keywords() {
    assert_eq!(
        error(json!({"minItems": 1}), json!([])),
        "expect array to have at least 1 items"
    );
    assert_eq!(
        error(json!({"maxItems": 1}), json!([1, 2])),
        "expect array to have at most 1 items"
    );
    assert_eq!(
        error(json!({"uniqueItems": true}), json!([1, "a", "a"])),
        "expected unique items but items 2 and 3 are equal"
    );
    assert_eq!(
        error(json!({"uniqueItems": true}), json!([{"a": 1}, 2, {"a": 1}])),
        "expected unique items but items 1 and 3 are equal"
    );
    assert_eq!(
        error(json!({"items": {"type": "string"}}), json!(["a", 1])),
        "failed to validate item 2: wrong type: expected string, got number"
    );
    let tuple =
        json!({"items": [{"type": "string"}, {"type": "integer"}], "additionalItems": false});
    assert!(valid(tuple.clone(), json!(["a"])));
    assert_eq!(
        error(tuple.clone(), json!(["a", "b"])),
        "failed to validate item 2: wrong type: expected integer, got string"
    );
    assert_eq!(error(tuple, json!(["a", 1, 2])), "found extra item");
    let tuple = json!({"items": [{}], "additionalItems": {"type": "string"}});
    assert_eq!(
        error(tuple, json!([1, "a", 2])),
        "failed to validate additional item 3: wrong type: expected string, got number"
    );
    assert!(valid(
        json!({"contains": {"type": "integer"}}),
        json!(["a", 1])
    ));
    assert!(!valid(
        json!({"contains": {"type": "integer"}}),
        json!(["a"])
    ));
}

#[test]
fn defaults_are_filled_inside_array_items() {
    let schema = json!({"items": {"properties": {"p": {"default": 0}}}});
    assert_eq!(
        filled(schema, json!([{}, {"p": 2}])),
        json!([{"p": 0}, {"p": 2}])
    );
}

// ----- combinators ------------------------------------------------------------------------------------

#[test]
fn combinators() {
    let one_of = json!({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]});
    assert_eq!(
        error(one_of.clone(), json!({"a": 1, "b": 1})),
        "value should match only one schema, but matches both schemas 1 and 2"
    );
    assert_eq!(
        error(one_of.clone(), json!({})),
        "value should match only one schema, but matches none"
    );
    assert!(valid(one_of, json!({"b": 1})));
    let any_of = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
    assert_eq!(
        error(any_of, json!(1.5)),
        "object matches none of the alternatives"
    );
    assert_eq!(
        error(json!({"not": {"type": "string"}}), json!("x")),
        "value wasn't supposed to match schema"
    );
    assert_eq!(
        error(json!({"allOf": [{}, {"type": "string"}]}), json!(1)),
        "allOf 2 failed: wrong type: expected string, got number"
    );
}

#[test]
fn if_then_else() {
    let schema = json!({
        "properties": {"policy": {"type": "string", "default": "local"}},
        "if": {"properties": {"policy": {"enum": ["redis"]}}},
        "then": {"required": ["redis_host"]},
        "else": {"not": {"required": ["redis_host"]}}
    });
    assert_eq!(
        error(schema.clone(), json!({"policy": "redis"})),
        "then clause did not match"
    );
    assert!(valid(
        schema.clone(),
        json!({"policy": "redis", "redis_host": "h"})
    ));
    assert_eq!(
        error(schema.clone(), json!({"redis_host": "h"})),
        "else clause did not match"
    );
    assert_eq!(filled(schema, json!({})), json!({"policy": "local"}));
}

#[test]
fn boolean_schemas() {
    assert!(valid(json!(true), json!(1)));
    assert_eq!(error(json!(false), json!(1)), "expect false always");
    assert!(valid(json!({"properties": {"a": true}}), json!({"a": 1})));
}

// ----- $ref and compile errors ------------------------------------------------------------------------

#[test]
fn refs_resolve_against_the_root() {
    let schema = json!({
        "definitions": {
            "node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/definitions/node"}, "v": {"type": "integer", "default": 7}}
            }
        },
        "$ref": "#/definitions/node"
    });
    assert_eq!(
        filled(schema.clone(), json!({"next": {"next": {}}})),
        json!({"next": {"next": {"v": 7}, "v": 7}, "v": 7})
    );
    assert_eq!(
        error(schema, json!({"next": {"v": "x"}})),
        r#"property "next" validation failed: property "v" validation failed: wrong type: expected integer, got string"#
    );
}

#[test]
fn bad_schemas_are_rejected_at_compile_time() {
    assert!(matches!(
        Schema::compile(&json!({"pattern": "("})),
        Err(SchemaError::Pattern { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!({"$ref": "#/definitions/missing"})),
        Err(SchemaError::Ref { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!({"$ref": "http://example.com/s.json"})),
        Err(SchemaError::Ref { .. })
    ));
    assert!(matches!(
        Schema::compile(
            &json!({"definitions": {"a": {"$ref": "#/definitions/a"}}, "$ref": "#/definitions/a"})
        ),
        Err(SchemaError::Ref { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!({"type": "str"})),
        Err(SchemaError::Keyword { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!({"minLength": "3"})),
        Err(SchemaError::Keyword { .. })
    ));
}

#[test]
fn self_recursive_schema_fails_instead_of_overflowing() {
    let schema = compile(json!({"allOf": [{"$ref": "#"}]}));
    assert!(schema.validate_ref(&json!(1)).is_err());
}

#[test]
fn empty_lua_tables_are_accepted_in_schemas() {
    // `required = {}` and `properties = {}` may arrive as `{}` or `[]`.
    assert!(valid(
        json!({"required": {}, "properties": [], "enum": [1], "items": {}}),
        json!(1)
    ));
    assert!(valid(json!([]), json!("x")));
}

// ----- resources: routes ------------------------------------------------------------------------------

fn check(kind: ResourceKind, value: Value) -> Result<(), String> {
    kind.check(&value).map_err(|e| e.to_string())
}

#[test]
fn route_with_uri_and_a_plugin_only_is_valid() {
    let route = json!({
        "uri": "/aws/*",
        "plugins": {"aws-lambda": {"function_uri": "https://abc.lambda-url.us-east-1.on.aws/"}}
    });
    assert_eq!(check(ResourceKind::Route, route.clone()), Ok(()));
    // The stored value is not touched by `check`.
    let before = route.clone();
    ResourceKind::Route.check(&route).expect("valid route");
    assert_eq!(route, before);
}

#[test]
fn route_check_and_fill_adds_defaults() {
    let mut route = json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:80": 1}}});
    ResourceKind::Route
        .check_and_fill(&mut route)
        .expect("valid route");
    assert_eq!(route["priority"], 0);
    assert_eq!(route["status"], 1);
    assert_eq!(route["upstream"]["type"], "roundrobin");
    assert_eq!(route["upstream"]["hash_on"], "vars");
    assert_eq!(route["upstream"]["pass_host"], "pass");
    assert_eq!(route["upstream"]["scheme"], "http");
}

#[test]
fn route_field_errors() {
    let err = check(ResourceKind::Route, json!({"uri": 123, "plugins": {}})).expect_err("bad uri");
    assert_eq!(
        err,
        r#"invalid configuration: property "uri" validation failed: wrong type: expected string, got number"#
    );
    assert_eq!(
        check(
            ResourceKind::Route,
            json!({"uri": "/", "plugins": {}, "foo": 1})
        ),
        Err("invalid configuration: additional properties forbidden, found foo".to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "methods": ["GET", "FETCH"]})),
        Err(r#"invalid configuration: property "methods" validation failed: failed to validate item 2: matches none of the enum values"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "methods": ["GET", "GET"]})),
        Err(r#"invalid configuration: property "methods" validation failed: expected unique items but items 1 and 2 are equal"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "", "plugins": {}})),
        Err(r#"invalid configuration: property "uri" validation failed: string too short, expected at least 1, got 0"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "status": 2})),
        Err(r#"invalid configuration: property "status" validation failed: matches none of the enum values"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "id": "a b"})),
        Err(r#"invalid configuration: property "id" validation failed: object matches none of the alternatives"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "filter_func": "return true"})),
        Err(r#"invalid configuration: property "filter_func" validation failed: failed to match pattern "^function" with "return true""#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "plugins": {}, "timeout": {"connect": 0, "send": 1, "read": 1}})),
        Err(r#"invalid configuration: property "timeout" validation failed: property "connect" validation failed: expected 0 to be strictly greater than 0"#.to_owned())
    );
}

#[test]
fn route_cross_field_rules() {
    assert_eq!(
        ResourceKind::Route
            .check(&json!({"uri": "/", "plugins": {}, "host": "a.com", "hosts": ["b.com"]})),
        Err(CheckError::Rule(
            "only one of host or hosts is allowed".to_owned()
        ))
    );
    assert_eq!(
        check(
            ResourceKind::Route,
            json!({"uri": "/", "plugins": {}, "remote_addr": "127.0.0.1", "remote_addrs": ["::1"]})
        ),
        Err("only one of remote_addr or remote_addrs is allowed".to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"plugins": {}})),
        Err("invalid configuration: allOf 1 failed: value should match only one schema, but matches none".to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/", "uris": ["/a"], "plugins": {}})),
        Err("invalid configuration: allOf 1 failed: value should match only one schema, but matches both schemas 1 and 2".to_owned())
    );
    assert_eq!(
        check(ResourceKind::Route, json!({"uri": "/"})),
        Err("invalid configuration: object matches none of the alternatives".to_owned())
    );
    assert_eq!(
        check(
            ResourceKind::Route,
            json!({"uri": "/", "script": "local a = 1 return a", "plugins": {}})
        ),
        Err("invalid configuration: value wasn't supposed to match schema".to_owned())
    );
    for target in [
        json!({"upstream_id": "1"}),
        json!({"service_id": 1}),
        json!({"script": "return 1 -- long enough"}),
    ] {
        let mut route = target;
        route["uris"] = json!(["/a", "/b"]);
        assert_eq!(check(ResourceKind::Route, route), Ok(()));
    }
}

#[test]
fn route_hosts_and_addresses() {
    let ok = |extra: Value| {
        let mut route = json!({"uri": "/", "upstream_id": 1});
        if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
            route.extend(extra.clone());
        }
        check(ResourceKind::Route, route)
    };
    assert_eq!(ok(json!({"host": "*.example.com"})), Ok(()));
    assert_eq!(ok(json!({"host": "*"})), Ok(()));
    assert_eq!(ok(json!({"hosts": ["a.com", "[::1]:80"]})), Ok(()));
    assert_eq!(
        ok(json!({"host": "a b"})),
        Err(r#"invalid configuration: property "host" validation failed: failed to match pattern "^\\*$|^\\*?[0-9a-zA-Z-._\\[\\]:]+$" with "a b""#.to_owned())
    );
    for addr in ["10.0.0.1", "10.0.0.0/8", "::1", "fe80::/10"] {
        assert_eq!(ok(json!({"remote_addr": addr})), Ok(()), "{addr}");
    }
    assert_eq!(
        ok(json!({"remote_addrs": ["10.0.0.1", "nope"]})),
        Err(r#"invalid configuration: property "remote_addrs" validation failed: failed to validate item 2: object matches none of the alternatives"#.to_owned())
    );
    assert_eq!(
        ok(json!({"labels": {"env": "prod", "team": ""}})),
        Err(r#"invalid configuration: property "labels" validation failed: property "team" validation failed: string too short, expected at least 1, got 0"#.to_owned())
    );
}

// ----- resources: upstreams, services, consumers, ssls ------------------------------------------------

#[test]
fn upstream_nodes_in_both_forms() {
    assert_eq!(
        check(
            ResourceKind::Upstream,
            json!({"type": "roundrobin", "nodes": {"127.0.0.1:8080": 1, "b:80": 0}})
        ),
        Ok(())
    );
    let mut upstream = json!({"nodes": [{"host": "127.0.0.1", "port": 8080, "weight": 1}]});
    ResourceKind::Upstream
        .check_and_fill(&mut upstream)
        .expect("valid upstream");
    assert_eq!(upstream["nodes"][0]["priority"], 0);
    assert_eq!(
        check(ResourceKind::Upstream, json!({"nodes": [{"host": "127.0.0.1", "port": 8080}]})),
        Err(r#"invalid configuration: property "nodes" validation failed: object matches none of the alternatives"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Upstream, json!({"nodes": {"a:1": -1}})),
        Err(r#"invalid configuration: property "nodes" validation failed: object matches none of the alternatives"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Upstream, json!({"type": "roundrobin"})),
        Err(
            "invalid configuration: value should match only one schema, but matches none"
                .to_owned()
        )
    );
    assert_eq!(
        check(
            ResourceKind::Upstream,
            json!({"service_name": "svc", "discovery_type": "dns"})
        ),
        Ok(())
    );
}

#[test]
fn upstream_fields_and_rules() {
    let nodes = json!({"127.0.0.1:80": 1});
    let with = |extra: Value| {
        let mut upstream = json!({"nodes": nodes.clone()});
        if let (Some(u), Some(extra)) = (upstream.as_object_mut(), extra.as_object()) {
            u.extend(extra.clone());
        }
        check(ResourceKind::Upstream, upstream)
    };
    assert_eq!(
        with(json!({"type": "random"})),
        Err(r#"invalid configuration: property "type" validation failed: matches none of the enum values"#.to_owned())
    );
    assert_eq!(
        with(json!({"retries": -1})),
        Err(r#"invalid configuration: property "retries" validation failed: expected -1 to be greater than 0"#.to_owned())
    );
    assert_eq!(
        with(json!({"scheme": "ftp"})),
        Err(r#"invalid configuration: property "scheme" validation failed: matches none of the enum values"#.to_owned())
    );
    assert_eq!(
        with(json!({"keepalive_pool": {"size": 0}})),
        Err(r#"invalid configuration: property "keepalive_pool" validation failed: property "size" validation failed: expected 0 to be greater than 1"#.to_owned())
    );
    assert_eq!(
        with(json!({"pass_host": "rewrite"})),
        Err("`upstream_host` can't be empty when `pass_host` is `rewrite`".to_owned())
    );
    assert_eq!(
        with(json!({"pass_host": "rewrite", "upstream_host": "a.com"})),
        Ok(())
    );
    assert_eq!(
        with(json!({"type": "chash"})),
        Err("missing key".to_owned())
    );
    assert_eq!(
        with(json!({"type": "chash", "hash_on": "consumer"})),
        Ok(())
    );
    assert_eq!(with(json!({"type": "chash", "key": "remote_addr"})), Ok(()));
    assert_eq!(with(json!({"type": "chash", "key": "arg_user"})), Ok(()));
    assert!(
        with(json!({"type": "chash", "key": "bogus"}))
            .expect_err("bad vars key")
            .starts_with("invalid configuration: failed to match pattern")
    );
    assert_eq!(
        with(json!({"type": "chash", "hash_on": "header", "key": "X-User"})),
        Ok(())
    );
    assert_eq!(
        with(json!({"tls": {"client_cert": "x".repeat(128)}})),
        Err(r#"invalid configuration: property "tls" validation failed: failed to validate dependent schema for "client_cert": property "client_key" is required"#.to_owned())
    );
    let mut upstream = json!({"nodes": nodes.clone(), "keepalive_pool": {}});
    ResourceKind::Upstream
        .check_and_fill(&mut upstream)
        .expect("valid upstream");
    assert_eq!(
        upstream["keepalive_pool"],
        json!({"size": 320, "idle_timeout": 60, "requests": 1000})
    );
}

#[test]
fn route_embedded_upstream_runs_upstream_rules() {
    assert_eq!(
        check(
            ResourceKind::Route,
            json!({"uri": "/", "upstream": {"nodes": {"a:1": 1}, "type": "chash"}})
        ),
        Err("missing key".to_owned())
    );
    assert_eq!(
        check(
            ResourceKind::Service,
            json!({"upstream": {"nodes": {"a:1": 1}, "pass_host": "rewrite"}})
        ),
        Err("`upstream_host` can't be empty when `pass_host` is `rewrite`".to_owned())
    );
}

#[test]
fn services() {
    assert_eq!(
        check(
            ResourceKind::Service,
            json!({"name": "s", "upstream_id": "1", "hosts": ["a.com"]})
        ),
        Ok(())
    );
    assert_eq!(check(ResourceKind::Service, json!({})), Ok(()));
    assert_eq!(
        check(ResourceKind::Service, json!({"uri": "/"})),
        Err("invalid configuration: additional properties forbidden, found uri".to_owned())
    );
    assert_eq!(
        check(ResourceKind::Service, json!({"hosts": []})),
        Err(r#"invalid configuration: property "hosts" validation failed: expect array to have at least 1 items"#.to_owned())
    );
}

#[test]
fn consumers() {
    assert_eq!(
        check(
            ResourceKind::Consumer,
            json!({"username": "jack_1-a", "plugins": {}})
        ),
        Ok(())
    );
    assert_eq!(
        check(ResourceKind::Consumer, json!({"plugins": {}})),
        Err(r#"invalid configuration: property "username" is required"#.to_owned())
    );
    assert_eq!(
        check(ResourceKind::Consumer, json!({"username": "jack%"})),
        Err(r#"invalid configuration: property "username" validation failed: failed to match pattern "^[a-zA-Z0-9_\\-]+$" with "jack%""#.to_owned())
    );
}

#[test]
fn ssls() {
    let pem = "-".repeat(200);
    assert_eq!(
        check(
            ResourceKind::Ssl,
            json!({"cert": pem, "key": pem, "snis": ["a.com"]})
        ),
        Ok(())
    );
    assert_eq!(
        check(ResourceKind::Ssl, json!({"cert": pem, "key": pem})),
        Err("invalid configuration: then clause did not match".to_owned())
    );
    assert_eq!(
        check(
            ResourceKind::Ssl,
            json!({"type": "client", "cert": pem, "key": pem})
        ),
        Ok(())
    );
    assert_eq!(
        check(ResourceKind::Ssl, json!({"cert": "short", "key": pem, "sni": "a.com"})),
        Err(r#"invalid configuration: property "cert" validation failed: value should match only one schema, but matches none"#.to_owned())
    );
    assert_eq!(
        check(
            ResourceKind::Ssl,
            json!({"cert": "$secret://vault/1/cert", "key": "$env://KEY", "sni": "a.com"})
        ),
        Ok(())
    );
    assert_eq!(
        check(
            ResourceKind::Ssl,
            json!({"cert": pem, "key": pem, "sni": "a.com", "certs": [pem]})
        ),
        Err("mismatched number of certs and keys".to_owned())
    );
}

#[test]
fn plugin_configs_global_rules_groups_and_metadata() {
    assert_eq!(
        check(
            ResourceKind::PluginConfig,
            json!({"id": "1", "plugins": {}})
        ),
        Ok(())
    );
    assert_eq!(
        check(ResourceKind::GlobalRule, json!({"id": 1})),
        Err(r#"invalid configuration: property "plugins" is required"#.to_owned())
    );
    assert_eq!(
        check(
            ResourceKind::ConsumerGroup,
            json!({"id": "g", "plugins": {}})
        ),
        Ok(())
    );
    assert_eq!(
        check(
            ResourceKind::PluginMetadata,
            json!({"id": "http-logger", "log_format": {}})
        ),
        Ok(())
    );
}

#[test]
fn every_resource_schema_compiles_and_is_exposed() {
    for kind in ResourceKind::ALL {
        let _ = kind.schema();
        assert_eq!(kind.schema_json()["type"], "object", "{}", kind.name());
        assert_eq!(ResourceKind::from_name(kind.name()), Some(kind));
        assert_eq!(schema_def()[kind.name()], *kind.schema_json());
    }
    assert_eq!(ResourceKind::from_name("routes"), Some(ResourceKind::Route));
    assert_eq!(ResourceKind::from_name("ssls"), Some(ResourceKind::Ssl));
    assert_eq!(ResourceKind::from_name("nope"), None);
    assert!(schema_def()["ip_def"].is_array());
    assert_eq!(
        ResourceKind::Route.validate(&json!({"uri": 1})),
        Err(
            r#"property "uri" validation failed: wrong type: expected string, got number"#
                .to_owned()
        )
    );
    // Key order of the schema document is the order it was written in.
    let keys: Vec<&String> = ResourceKind::Route
        .schema_json()
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "type",
            "properties",
            "allOf",
            "anyOf",
            "not",
            "additionalProperties"
        ]
    );
}

// ----- _meta injection --------------------------------------------------------------------------------
