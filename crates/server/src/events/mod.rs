//! Events out: the outbox feed, the server-sent stream and outbound webhooks.

pub mod destination;
pub mod dispatcher;
pub mod http;
pub mod service;
pub mod store;
