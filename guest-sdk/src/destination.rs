//! Builder methods for [`Destination`].

use crate::{Destination, Header, JsonError};

/// Building a record for the host to write.
///
/// ```
/// use fanout_sdk::Destination;
///
/// // Forward the source record's value and key unchanged to `k8s-shop`.
/// let forward = Destination::to("k8s-shop");
/// assert_eq!(forward.payload, None);
/// assert_eq!(forward.key, None);
///
/// // A new record with its own key, a header and a JSON value.
/// let alert = Destination::to("k8s-alerts")
///     .key("shop/Pod/web-0")
///     .header("k8s-reason", "BackOff")
///     .json_payload(&serde_json::json!({"reason": "BackOff"}))
///     .unwrap();
/// assert_eq!(alert.payload.as_deref(), Some(&br#"{"reason":"BackOff"}"#[..]));
/// ```
impl Destination {
    /// A record for `topic` that forwards the source record's value and key unchanged.
    ///
    /// The host checks the topic name against Kafka's rules (`[a-zA-Z0-9._-]`, 1 to 249
    /// characters, not `.` or `..`, no `__` prefix) and dead-letters the event if it fails.
    pub fn to(topic: impl Into<String>) -> Self {
        Destination {
            topic: topic.into(),
            key: None,
            headers: Vec::new(),
            payload: None,
        }
    }

    /// Sets the record key. Without it the source record's key is kept.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header. Headers keep their order; a name may appear more than once.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            key: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sets the record value. Without it the source bytes (the whole EventRouter envelope) are
    /// forwarded unchanged, without being copied back to the host.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the record value to `value` encoded as compact JSON.
    ///
    /// Fails only when `value` cannot be represented in JSON (for example a map whose keys are
    /// not strings); the error converts to `String` so `?` works in a route function.
    pub fn json_payload<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, JsonError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| JsonError::new(format!("cannot encode the payload as JSON: {e}")))?;
        Ok(self.payload(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn defaults_forward_source() {
        let d = Destination::to("t");
        assert_eq!(d.topic, "t");
        assert_eq!(d.key, None);
        assert!(d.headers.is_empty());
        assert_eq!(d.payload, None);
    }

    #[test]
    fn builder_sets_everything() {
        let d = Destination::to(String::from("t"))
            .key("k")
            .header("a", "1")
            .header("a", vec![2u8])
            .payload(&b"p"[..]);
        assert_eq!(d.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            d.headers,
            vec![
                Header {
                    key: "a".into(),
                    value: Some(b"1".to_vec())
                },
                Header {
                    key: "a".into(),
                    value: Some(vec![2])
                },
            ]
        );
        assert_eq!(d.payload.as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn json_payload_is_compact() {
        #[derive(serde::Serialize)]
        struct P<'a> {
            a: &'a str,
            n: i32,
        }
        let d = Destination::to("t")
            .json_payload(&P { a: "x", n: 1 })
            .unwrap();
        assert_eq!(d.payload.as_deref(), Some(&br#"{"a":"x","n":1}"#[..]));
    }

    #[test]
    fn json_payload_error_converts_to_string() {
        fn build() -> Result<Destination, String> {
            let mut bad = BTreeMap::new();
            bad.insert(vec![1u8], 1);
            Ok(Destination::to("t").json_payload(&bad)?)
        }
        let err = build().unwrap_err();
        assert!(
            err.starts_with("cannot encode the payload as JSON: "),
            "{err}"
        );
    }
}
