//! A request body sent to the API, read as each of the bodies the API takes
//! (conference create and update, member add and update, call create and
//! update, audio). Whatever it holds, the answer is a typed request or a 400
//! with a Catapult error naming what was wrong, never anything else; and the
//! lenient conventions (docs/api.md) hold for every field: a body the API
//! accepted, with its booleans and numbers written as strings, `null`
//! fields dropped and an unknown field added, is read as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sipconf::api::requests::{self, CallUpdate, ConferenceCreate, ConferenceUpdate, MemberAdd};
use sipconf::api::ApiError;
use std::fmt::Debug;

/// The same body under the lenient conventions; `None` when it is not an object.
fn lenient_twin(body: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut twin = Map::new();
    for (name, value) in fields {
        let value = match value {
            Value::Null => continue,
            Value::Bool(b) => Value::String(if b { "TRUE" } else { "False" }.into()),
            // Every number as the string of its value: the same for string and
            // number fields, and no float is parsed twice.
            Value::Number(n) => Value::String(n.to_string()),
            other => other,
        };
        twin.insert(name, value);
    }
    twin.entry("someFieldNobodyKnows")
        .or_insert(Value::Array(vec![]));
    serde_json::to_vec(&Value::Object(twin)).ok()
}

fn check<T: PartialEq + Debug>(body: &[u8], read: fn(&[u8]) -> Result<T, ApiError>) {
    match read(body) {
        Ok(request) => {
            if let Some(twin) = lenient_twin(body) {
                assert_eq!(
                    read(&twin).as_ref(),
                    Ok(&request),
                    "{}",
                    String::from_utf8_lossy(&twin)
                );
            }
        }
        Err(error) => {
            let catapult = error.catapult();
            assert_eq!(catapult.status.as_u16(), 400, "{error:?}");
            assert_eq!(catapult.category, "bad-request");
            assert!(!catapult.message.is_empty());
        }
    }
}

fuzz_target!(|body: &[u8]| {
    check(body, ConferenceCreate::parse);
    check(body, ConferenceUpdate::parse);
    check(body, MemberAdd::parse);
    check(body, requests::member_update);
    check(body, CallUpdate::parse);
    check(body, requests::call_create);
    check(body, requests::audio);
});
