//! The integration tests: one binary, the real server on an ephemeral port, real sockets.

mod helpers;

mod chat;
mod cluster;
mod error_codes;
mod hostile;
mod hostile_suite;
mod http;
mod invites;
mod layout;
mod lease;
mod metrics;
mod moderation;
mod options_doc;
mod order;
mod ownership;
mod protocol;
mod redis_tls;
mod resume;
mod robustness;
mod tree;
mod turn;
mod waiting;
mod webhooks;
