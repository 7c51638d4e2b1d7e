//! fanout's default plugin: forwards every event, byte for byte, to a topic named after the
//! namespace of the Event object (`event.metadata.namespace`), optionally prefixed.
//!
//! Configuration (`by_namespace.json`; everything optional):
//!
//! ```json
//! {"prefix": ""}
//! ```
//!
//! - Topic: `<prefix><namespace>`. With the default empty prefix this is what the Go tool it
//!   replaces did.
//! - Value: the source bytes, unchanged.
//! - Key: the source record's key; when the source record has none, `involvedObject.name`
//!   (and no key if that is empty too).
//! - An event without a namespace is an error, so it goes to the dead-letter topic.

use fanout_sdk::{Destination, Event};

/// The plugin's configuration.
#[derive(serde::Deserialize, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Prepended to the namespace to make the topic name.
    prefix: String,
}

/// Longest accepted prefix, leaving room for a namespace (at most 63 characters) within Kafka's
/// limit of 249 characters for a topic name.
const MAX_PREFIX_LEN: usize = 199;

impl fanout_sdk::Config for Config {
    fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self
            .prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "prefix {:?} contains {bad:?}; a Kafka topic name may only contain [a-zA-Z0-9._-]",
                self.prefix
            ));
        }
        // Only ASCII is left, so bytes are characters.
        if self.prefix.len() > MAX_PREFIX_LEN {
            return Err(format!(
                "prefix is {} characters long; it must be shorter than 200",
                self.prefix.len()
            ));
        }
        Ok(())
    }
}

fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
    let namespace = ev.namespace();
    if namespace.is_empty() {
        return Err(
            "event.metadata.namespace is missing or empty; cannot route by namespace".into(),
        );
    }
    let mut destination = Destination::to(format!("{}{namespace}", config.prefix));
    // No key on the destination keeps the source key; only fill in a missing one. (The involved
    // object is read only then: each field read is a call into the host.)
    if ev.source_key().is_none() {
        let name = &ev.involved_object().name;
        if !name.is_empty() {
            destination = destination.key(name.as_str());
        }
    }
    Ok(vec![destination])
}

fanout_sdk::export!(route, config: Config);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(namespace: &str, object_name: &str) -> Event<'static> {
        Event::from_envelope(format!(
            r#"{{"verb":"ADDED","event":{{"metadata":{{"name":"x.1","namespace":"{namespace}"}},
                "involvedObject":{{"kind":"Pod","name":"{object_name}"}},"reason":"Started"}}}}"#
        ))
        .unwrap()
    }

    fn config(json: &str) -> Result<Config, String> {
        fanout_sdk::parse_config!(Config, json)
    }

    #[test]
    fn default_config_is_empty_prefix() {
        assert_eq!(config("{}").unwrap(), Config::default());
        assert_eq!(config(r#"{"prefix":""}"#).unwrap(), Config::default());
    }

    #[test]
    fn forwards_unchanged_to_namespace_topic_keeping_source_key() {
        let ev = event("shop", "web-0").with_source_key("original");
        let out = route(&ev, &Config::default()).unwrap();
        assert_eq!(out, vec![Destination::to("shop")]);
        assert_eq!(out[0].payload, None, "payload is forwarded unchanged");
        assert_eq!(out[0].key, None, "source key is kept");
        assert!(out[0].headers.is_empty());
    }

    #[test]
    fn empty_source_key_is_still_a_key() {
        let ev = event("shop", "web-0").with_source_key("");
        assert_eq!(route(&ev, &Config::default()).unwrap()[0].key, None);
    }

    #[test]
    fn prefix_is_prepended() {
        let config = config(r#"{"prefix":"k8s-events."}"#).unwrap();
        let out = route(&event("kube-system", "n"), &config).unwrap();
        assert_eq!(out[0].topic, "k8s-events.kube-system");
    }

    #[test]
    fn missing_source_key_falls_back_to_involved_object_name() {
        let out = route(&event("shop", "web-0"), &Config::default()).unwrap();
        assert_eq!(out, vec![Destination::to("shop").key("web-0")]);
    }

    #[test]
    fn no_key_at_all_when_involved_object_name_is_empty_too() {
        let out = route(&event("shop", ""), &Config::default()).unwrap();
        assert_eq!(out, vec![Destination::to("shop")]);
    }

    #[test]
    fn missing_or_empty_namespace_is_an_error() {
        let expected = "event.metadata.namespace is missing or empty; cannot route by namespace";
        let ev = event("", "web-0");
        assert_eq!(route(&ev, &Config::default()).unwrap_err(), expected);
        let ev = Event::from_envelope(r#"{"verb":"ADDED","event":{}}"#).unwrap();
        assert_eq!(route(&ev, &Config::default()).unwrap_err(), expected);
    }

    #[test]
    fn refuses_bad_prefixes() {
        let err = config(r#"{"prefix":"a b"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: prefix \"a b\" contains ' '"),
            "{err}"
        );
        assert!(config(r#"{"prefix":"a/b"}"#).is_err());
        assert!(config(r#"{"prefix":"é"}"#).is_err());
        assert!(config(&format!(r#"{{"prefix":"{}"}}"#, "a".repeat(199))).is_ok());
        let err = config(&format!(r#"{{"prefix":"{}"}}"#, "a".repeat(200))).unwrap_err();
        assert!(err.contains("shorter than 200"), "{err}");
        assert!(config(r#"{"prefix":"Az09._-"}"#).is_ok());
    }

    #[test]
    fn refuses_unknown_fields_and_wrong_types() {
        let err = config(r#"{"prefx":"a"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: unknown field `prefx`"),
            "{err}"
        );
        assert!(err.contains("line 1 column"), "{err}");
        assert!(config(r#"{"prefix":1}"#).is_err());
    }
}
