//! Kafka clients: the admin client (creating missing topics), the consumer (group membership, rebalances, offset storage) and the producer
//! (idempotent writes, delivery reports, retries).

pub mod admin;
pub mod consumer;
pub mod producer;
