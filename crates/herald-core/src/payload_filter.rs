//! Payload filters: the small JSON language a webhook's `filter` is written in, parsed
//! once at registration (bounded, with a clear error) and matched against an event's body
//! at fan-out.
//!
//! ```text
//! filter    = { clause, … }                    every clause holds
//! clause    = "$and": [filter, …]              every filter holds
//!           | "$or":  [filter, …]              at least one holds
//!           | "<JSON pointer>": condition      e.g. "/data/amount", "/type", "/key"
//! condition = <a JSON value, not an object>    equal to the value at the pointer
//!           | { "$eq": <any JSON value> }      equal (objects compared whole)
//!           | { "$in": [<JSON value>, …] }     equal to one of them
//!           | { "$exists": true | false }      the pointer finds a value (or not)
//! ```
//!
//! Pointers (RFC 6901) point into the delivery body `{"id","type","created_at","key"?,
//! "sequence"?,"data"}`. A pointer that finds nothing is unequal to everything and not
//! `$in` anything. Numbers are equal when their values are (`1` equals `1.0`).

use serde_json::Value;

/// At most this many bytes of JSON (as registered, serialised compactly).
pub const MAX_FILTER_BYTES: usize = 4096;
/// At most this many nested `$and`/`$or` levels.
pub const MAX_FILTER_DEPTH: usize = 5;
/// At most this many conditions and `$in` entries in all.
pub const MAX_FILTER_TERMS: usize = 64;
/// The longest pointer.
pub const MAX_POINTER_BYTES: usize = 256;

/// Why a filter was refused; the message names the place (`filter./data/x.$in`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

/// A parsed filter, with the JSON it was parsed from (shown back as registered).
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadFilter {
    root: Node,
    source: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Test { pointer: String, test: Test },
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Value),
    In(Vec<Value>),
    Exists(bool),
}

/// What a filter may spend: the limits of a request, or none for a stored filter.
struct Budget {
    terms: usize,
    max_terms: usize,
    max_depth: usize,
}

impl PayloadFilter {
    /// Parses and bounds a filter as sent in a request.
    pub fn parse(value: &Value) -> Result<Self, FilterError> {
        let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
        if size > MAX_FILTER_BYTES {
            return Err(err(
                "filter",
                format!("is {size} bytes of JSON; at most {MAX_FILTER_BYTES} are allowed"),
            ));
        }
        let mut budget = Budget {
            terms: 0,
            max_terms: MAX_FILTER_TERMS,
            max_depth: MAX_FILTER_DEPTH,
        };
        let root = parse_filter(value, "filter", 0, &mut budget)?;
        Ok(Self {
            root,
            source: value.clone(),
        })
    }

    /// Parses a filter as stored: its structure is checked, its size is not. The limits
    /// judged the filter once, when it was registered; a stored row is never judged again
    /// (its JSON, read back and serialised, may differ in length from what was measured,
    /// and limits may change between versions): a row that no longer passed would stall
    /// every fan-out and claim that reads it.
    pub fn from_stored(value: &Value) -> Result<Self, FilterError> {
        let mut budget = Budget {
            terms: 0,
            max_terms: usize::MAX,
            max_depth: usize::MAX,
        };
        let root = parse_filter(value, "filter", 0, &mut budget)?;
        Ok(Self {
            root,
            source: value.clone(),
        })
    }

    /// The filter as registered.
    pub fn as_json(&self) -> &Value {
        &self.source
    }

    /// Whether an event whose delivery body is `body` passes.
    pub fn matches(&self, body: &Value) -> bool {
        self.root.matches(body)
    }
}

fn err(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn parse_filter(
    value: &Value,
    path: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Node, FilterError> {
    let Value::Object(clauses) = value else {
        return Err(err(
            path,
            "a filter is an object of clauses ({\"/data/x\": 1}, \"$and\", \"$or\")",
        ));
    };
    if clauses.is_empty() {
        return Err(err(path, "a filter needs at least one clause"));
    }
    let mut nodes = Vec::with_capacity(clauses.len());
    for (key, v) in clauses {
        let here = format!("{path}.{key}");
        nodes.push(match key.as_str() {
            "$and" | "$or" => {
                if depth + 1 > budget.max_depth {
                    return Err(err(
                        &here,
                        format!("`$and`/`$or` nest at most {MAX_FILTER_DEPTH} deep"),
                    ));
                }
                let Value::Array(items) = v else {
                    return Err(err(&here, "must be a non-empty array of filters"));
                };
                if items.is_empty() {
                    return Err(err(&here, "must be a non-empty array of filters"));
                }
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, f)| parse_filter(f, &format!("{here}[{i}]"), depth + 1, budget))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Node::All(parts)
                } else {
                    Node::Any(parts)
                }
            }
            k if k.starts_with('/') => {
                if k.len() > MAX_POINTER_BYTES {
                    return Err(err(
                        &here,
                        format!("a pointer is at most {MAX_POINTER_BYTES} bytes"),
                    ));
                }
                check_pointer(k).map_err(|m| err(&here, m))?;
                Node::Test {
                    pointer: k.to_owned(),
                    test: parse_condition(v, &here, budget)?,
                }
            }
            k if k.starts_with('$') => {
                return Err(err(
                    &here,
                    format!("unknown operator {k:?} here (only \"$and\" and \"$or\" combine filters)"),
                ))
            }
            _ => {
                return Err(err(
                    &here,
                    "a key is a JSON pointer starting with \"/\" (like \"/data/amount\"), \"$and\" or \"$or\"",
                ))
            }
        });
    }
    Ok(if nodes.len() == 1 {
        nodes.pop().expect("one node")
    } else {
        Node::All(nodes)
    })
}

/// RFC 6901: `~` is only ever followed by `0` or `1`.
fn check_pointer(p: &str) -> Result<(), &'static str> {
    let bytes = p.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err("`~` in a JSON pointer must be written `~0` (and `/` as `~1`)");
        }
    }
    Ok(())
}

fn spend(budget: &mut Budget, n: usize, path: &str) -> Result<(), FilterError> {
    budget.terms = budget.terms.saturating_add(n);
    if budget.terms > budget.max_terms {
        return Err(err(
            path,
            format!("a filter holds at most {MAX_FILTER_TERMS} conditions and `$in` entries"),
        ));
    }
    Ok(())
}

fn parse_condition(v: &Value, path: &str, budget: &mut Budget) -> Result<Test, FilterError> {
    let Value::Object(op) = v else {
        spend(budget, 1, path)?;
        return Ok(Test::Eq(v.clone()));
    };
    let single = if op.len() == 1 {
        op.iter().next()
    } else {
        None
    };
    let Some((name, arg)) = single else {
        return Err(err(
            path,
            "a condition object holds exactly one of \"$eq\", \"$in\" or \"$exists\" (compare objects with {\"$eq\": {…}})",
        ));
    };
    let here = format!("{path}.{name}");
    match name.as_str() {
        "$eq" => {
            spend(budget, 1, &here)?;
            Ok(Test::Eq(arg.clone()))
        }
        "$in" => match arg {
            Value::Array(items) if !items.is_empty() => {
                spend(budget, items.len(), &here)?;
                Ok(Test::In(items.clone()))
            }
            _ => Err(err(&here, "must be a non-empty array of values")),
        },
        "$exists" => match arg {
            Value::Bool(b) => {
                spend(budget, 1, &here)?;
                Ok(Test::Exists(*b))
            }
            _ => Err(err(&here, "must be true or false")),
        },
        other => Err(err(
            &here,
            format!("unknown operator {other:?} (use \"$eq\", \"$in\" or \"$exists\")"),
        )),
    }
}

impl Node {
    fn matches(&self, body: &Value) -> bool {
        match self {
            Node::All(parts) => parts.iter().all(|p| p.matches(body)),
            Node::Any(parts) => parts.iter().any(|p| p.matches(body)),
            Node::Test { pointer, test } => {
                let found = body.pointer(pointer);
                match test {
                    Test::Exists(want) => found.is_some() == *want,
                    Test::Eq(v) => found.is_some_and(|f| same(f, v)),
                    Test::In(vs) => found.is_some_and(|f| vs.iter().any(|v| same(f, v))),
                }
            }
        }
    }
}

/// JSON equality where numbers compare by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"id": "evt_1", "type": "payment.succeeded", "created_at": "2026-01-01T00:00:00Z",
               "data": {"amount": 4599, "currency": "USD", "tags": ["a"], "card": {"brand": "visa"}, "a/b": 1, "n": null}})
    }

    fn passes(filter: Value) -> bool {
        PayloadFilter::parse(&filter).unwrap().matches(&body())
    }

    #[test]
    fn equality_in_exists_and_or() {
        assert!(passes(json!({"/data/currency": "USD"})));
        assert!(!passes(json!({"/data/currency": "EUR"})));
        assert!(passes(json!({"/data/amount": 4599.0})), "numbers by value");
        assert!(passes(json!({"/data/card": {"$eq": {"brand": "visa"}}})));
        assert!(passes(json!({"/data/tags": ["a"]})));
        assert!(passes(json!({"/data/a~1b": 1})), "escaped pointer");
        assert!(passes(json!({"/data/currency": {"$in": ["EUR", "USD"]}})));
        assert!(!passes(json!({"/data/missing": {"$in": ["EUR", null]}})));
        assert!(passes(json!({"/data/n": null})), "null found is null");
        assert!(
            !passes(json!({"/data/missing": null})),
            "nothing is not null"
        );
        assert!(passes(json!({"/data/n": {"$exists": true}})));
        assert!(passes(json!({"/data/missing": {"$exists": false}})));
        assert!(!passes(json!({"/data/amount": {"$exists": false}})));
        assert!(
            !passes(json!({"/type": "payment.succeeded", "/data/currency": "EUR"})),
            "every clause"
        );
        assert!(passes(
            json!({"$or": [{"/data/currency": "EUR"}, {"$and": [{"/type": "payment.succeeded"}, {"/data/amount": {"$in": [1, 4599]}}]}]})
        ));
        assert!(!passes(
            json!({"$or": [{"/data/currency": "EUR"}, {"/data/amount": 1}]})
        ));
    }

    fn refused(filter: Value) -> String {
        PayloadFilter::parse(&filter).unwrap_err().to_string()
    }

    #[test]
    fn bad_filters_are_refused_with_their_place() {
        assert!(refused(json!([1])).contains("`filter`"));
        assert!(refused(json!({})).contains("at least one clause"));
        assert!(refused(json!({"data/x": 1})).contains("JSON pointer"));
        assert!(refused(json!({"$not": []})).contains("unknown operator"));
        assert_eq!(
            refused(json!({"/data/x": {"$in": 3}})),
            "`filter./data/x.$in`: must be a non-empty array of values"
        );
        assert!(refused(json!({"/data/x": {"$gt": 3}})).contains("\"$gt\""));
        assert!(refused(json!({"/data/x": {"a": 1, "b": 2}})).contains("exactly one"));
        assert!(refused(json!({"/data/x": {"$exists": "yes"}})).contains("true or false"));
        assert!(refused(json!({"$or": []})).contains("non-empty"));
        assert!(refused(json!({"/a~2": 1})).contains("~0"));
    }

    #[test]
    fn filters_are_bounded() {
        let mut deep = json!({"/a": 1});
        for _ in 0..MAX_FILTER_DEPTH {
            deep = json!({ "$and": [deep] });
        }
        assert!(PayloadFilter::parse(&deep).is_ok());
        assert!(refused(json!({ "$or": [deep] })).contains("nest at most"));
        let many: Vec<Value> = (0..=MAX_FILTER_TERMS).map(Value::from).collect();
        assert!(refused(json!({"/a": {"$in": many}})).contains("at most 64"));
        let long = "x".repeat(MAX_FILTER_BYTES);
        assert!(refused(json!({"/a": long})).contains("bytes of JSON"));
        let pointer = format!("/{}", "p".repeat(MAX_POINTER_BYTES));
        assert!(refused(json!({ pointer: 1 })).contains("at most 256"));
    }

    #[test]
    fn a_stored_filter_is_not_judged_by_the_request_limits_again() {
        // Registered at the limit, read back longer (or under limits lowered since): a
        // stored row still decodes, so no fan-out or claim that reads it fails.
        let long = "x".repeat(MAX_FILTER_BYTES);
        let many: Vec<Value> = (0..=MAX_FILTER_TERMS).map(Value::from).collect();
        let mut deep = json!({"/a": 1});
        for _ in 0..=MAX_FILTER_DEPTH {
            deep = json!({ "$and": [deep] });
        }
        for f in [json!({"/a": long}), json!({"/a": {"$in": many}}), deep] {
            assert!(PayloadFilter::parse(&f).is_err());
            let stored = PayloadFilter::from_stored(&f).unwrap();
            assert_eq!(stored.as_json(), &f);
        }
        // Its structure is still checked.
        assert!(PayloadFilter::from_stored(&json!({"a": 1})).is_err());
    }

    #[test]
    fn the_source_is_kept() {
        let f = json!({"/type": {"$in": ["a", "b"]}});
        assert_eq!(PayloadFilter::parse(&f).unwrap().as_json(), &f);
    }
}
