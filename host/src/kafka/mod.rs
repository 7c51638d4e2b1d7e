//! Kafka clients: the admin client (creating missing topics), the consumer (group membership, rebalances, offset storage) and the producer
//! (idempotent writes, delivery reports, retries).

pub mod admin;
pub mod consumer;
pub mod producer;

/// What a property whose key looks secret shows instead of its value.
pub const REDACTED: &str = "<redacted>";

/// A client-creation error, safe to log. librdkafka's config errors end with the property's
/// value, which may be a password: the value is dropped, and cut out of the description too.
pub fn client_error(error: rdkafka::error::KafkaError, what: &str) -> anyhow::Error {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, description, key, value) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, REDACTED)
            };
            anyhow::anyhow!("{what}: librdkafka property {key:?}: {description}")
        }
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

/// What librdkafka says about the connection to the cluster, logged once per cause.
///
/// A broker that refuses fanout (a wrong password, a CA that did not sign its certificate) is
/// retried for ever, and librdkafka reports every retry through both clients' log and error
/// callbacks, each followed by "all broker connections are down": hundreds of lines a minute
/// that bury the one saying why. A cause is logged at error once (again after
/// [`ClientErrors::REPEAT`] if it persists); what follows from it (AllBrokersDown, the log
/// callback's FAIL line repeating the error callback) at debug.
#[derive(Debug, Default)]
pub struct ClientErrors {
    last: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl ClientErrors {
    pub const REPEAT: std::time::Duration = std::time::Duration::from_secs(300);

    /// librdkafka's error callback.
    pub fn report(&self, client: &'static str, error: &rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            tracing::debug!(client, "Kafka: {reason}");
            return;
        }
        // "... (after 193ms in state AUTH_REQ, 1 identical error(s) suppressed)" varies.
        let cause = reason.split(" (after ").next().unwrap_or(reason).to_owned();
        let mut last = crate::lock(&self.last);
        if let Some((previous, at)) = last.as_ref()
            && *previous == cause
            && at.elapsed() < Self::REPEAT
        {
            tracing::debug!(client, "Kafka: {reason}");
            return;
        }
        *last = Some((cause, std::time::Instant::now()));
        tracing::error!(client, "Kafka: {reason} ({error})");
    }
}

/// librdkafka's log callback: its FAIL lines are what the error callback reports
/// ([`ClientErrors`]), so they are debug; the rest as the rdkafka crate logs them.
pub fn log(
    client: &'static str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        _ if fac == "FAIL" => tracing::debug!(client, "librdkafka: {fac} {message}"),
        // The idempotent producer's id is refused for a moment while a broker that just started
        // loads its coordinator state (COORDINATOR_LOAD_IN_PROGRESS); librdkafka retries by
        // itself, and nothing is written until it has one.
        L::Warning if fac == "GETPID" && message.ends_with("retrying") => {
            tracing::info!(client, "librdkafka: {fac} {message}")
        }
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(client, "librdkafka: {fac} {message}")
        }
        L::Warning => tracing::warn!(client, "librdkafka: {fac} {message}"),
        L::Notice | L::Info => tracing::info!(client, "librdkafka: {fac} {message}"),
        L::Debug => tracing::debug!(client, "librdkafka: {fac} {message}"),
    }
}
