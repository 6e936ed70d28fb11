//! The portal's pages (askama templates in `templates/portal/`).

use askama::Template;
use serde_json::Value;

use crate::licenses::usage::UsageRow;
use crate::portal::store::AuditLine;

/// The portal's one page of sections.
#[derive(Template)]
#[template(path = "portal/home.html")]
pub struct Home {
    pub tenant_name: String,
    pub csrf: String,
    pub can_setup: bool,
    pub can_seats: bool,
    pub can_audit: bool,
    pub expires: String,
    pub scim_url: String,
    pub portal_tokens: usize,
    pub new_token: Option<String>,
    pub subscriptions: Vec<UsageRow>,
    pub waitlist: Vec<Value>,
    pub idle: Vec<Value>,
    pub holders: Vec<(String, String, String, String, String, String)>,
    pub audit: Vec<AuditLine>,
}

/// One user: their licences with the explanations, and their roles.
#[derive(Template)]
#[template(path = "portal/user.html")]
pub struct UserView {
    pub tenant_name: String,
    pub csrf: String,
    pub can_setup: bool,
    pub can_seats: bool,
    pub can_audit: bool,
    pub user_name: String,
    pub licenses: Vec<Value>,
    pub roles: Vec<Value>,
}

/// A refusal or failure.
#[derive(Template)]
#[template(path = "portal/error.html")]
pub struct ErrorView {
    pub tenant_name: String,
    pub csrf: String,
    pub can_setup: bool,
    pub can_seats: bool,
    pub can_audit: bool,
    pub status: u16,
    pub message: String,
}
