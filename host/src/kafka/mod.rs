//! Kafka clients: the admin client (creating missing topics), the consumer (group membership, rebalances, offset storage) and the producer
//! (idempotent writes, delivery reports, retries).

pub mod admin;
pub mod consumer;
pub mod producer;

/// A client-creation error, safe to log. librdkafka's config errors end with the property's
/// value, which may be a password: the value is dropped, and cut out of the description too.
pub fn client_error(error: rdkafka::error::KafkaError, what: &str) -> anyhow::Error {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, description, key, value) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, crate::config::REDACTED)
            };
            anyhow::anyhow!("{what}: librdkafka property {key:?}: {description}")
        }
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}
