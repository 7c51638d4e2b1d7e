//! Example plugin: copies every event, byte for byte, to one archive topic, so a single consumer
//! (a data lake loader, an audit job) sees the whole cluster's history in order per object.
//!
//! Configuration (`archive.json`; everything optional):
//!
//! ```json
//! {"topic": "k8s-events-archive"}
//! ```
//!
//! - Topic: `topic`.
//! - Key: `<involvedObject.namespace>/<involvedObject.name>`, so every event about one object
//!   lands in one partition, in order, even across namespaces with equal object names.
//! - Value: the source bytes, unchanged. Headers: none.
//!
//! Loaded beside `by_namespace.wasm`, every event goes to both its namespace topic and the
//! archive.

use fanout_sdk::{Destination, Event};

/// The plugin's configuration.
#[derive(serde::Deserialize, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Where every event is copied.
    topic: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            topic: "k8s-events-archive".into(),
        }
    }
}

impl fanout_sdk::Config for Config {
    fn validate(&self) -> Result<(), String> {
        let valid = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic != "."
            && self.topic != ".."
            && self
                .topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(())
        } else {
            Err(format!(
                "topic {:?} is not a Kafka topic name: 1 to 249 characters of [a-zA-Z0-9._-], \
                 not \".\" or \"..\"",
                self.topic
            ))
        }
    }
}

fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
    let object = ev.involved_object();
    let key = format!("{}/{}", object.namespace, object.name);
    Ok(vec![Destination::to(config.topic.as_str()).key(key)])
}

fanout_sdk::export!(route, config: Config);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, String> {
        fanout_sdk::parse_config!(Config, json)
    }

    #[test]
    fn copies_to_the_archive_keyed_by_object() {
        let ev = Event::from_envelope(
            r#"{"verb":"ADDED","event":{"metadata":{"namespace":"shop"},
                "involvedObject":{"kind":"Pod","namespace":"shop","name":"web-0"}}}"#,
        )
        .unwrap()
        .with_source_key("web-0");
        let out = route(&ev, &config("{}").unwrap()).unwrap();
        assert_eq!(
            out,
            vec![Destination::to("k8s-events-archive").key("shop/web-0")]
        );
        assert_eq!(
            out[0].payload, None,
            "the source bytes are forwarded unchanged"
        );
    }

    #[test]
    fn cluster_scoped_objects_have_an_empty_namespace_in_the_key() {
        let ev = Event::from_envelope(
            r#"{"verb":"ADDED","event":{"involvedObject":{"kind":"Node","name":"node-1"}}}"#,
        )
        .unwrap();
        let out = route(&ev, &config(r#"{"topic":"audit"}"#).unwrap()).unwrap();
        assert_eq!(out, vec![Destination::to("audit").key("/node-1")]);
    }

    #[test]
    fn refuses_bad_topics() {
        for bad in [r#"{"topic":""}"#, r#"{"topic":"a b"}"#, r#"{"topic":".."}"#] {
            let err = config(bad).unwrap_err();
            assert!(err.contains("is not a Kafka topic name"), "{bad}: {err}");
        }
        assert!(
            config(r#"{"topci":"x"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
