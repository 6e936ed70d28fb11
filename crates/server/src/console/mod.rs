//! The operator console at `/ui`: server-rendered pages (askama templates compiled into the
//! binary, no front-end build), signed in with the admin token, live counts over
//! server-sent events.

pub mod http;
pub mod pages;
pub mod service;
pub mod store;
