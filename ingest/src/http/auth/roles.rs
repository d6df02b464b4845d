//! Roles and what each may see. A request's [`Access`] is resolved once, by
//! the guard in front of every route, and every handler filters through it:
//! a customer outside the scope is answered like one that does not exist
//! (404), so a user cannot learn which customer ids exist.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use fleetpulse_engine::Segment;
use serde::{Deserialize, Serialize};

use crate::http::view::View;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including operators' clear ids.
    Admin,
    /// The customers assigned to them (`csm` in customers.toml, the user's
    /// `customers`, or the user's `segments`).
    Csm,
    /// Portfolio figures only: no customer by name.
    Viewer,
}

impl Role {
    /// The name in users.toml and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Csm => "csm",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// No authentication is configured (loopback or `allow_anonymous`).
    Anonymous,
    /// A dashboard session (login form).
    Session,
    /// An API token (`Authorization: Bearer`).
    Token,
    /// Headers of a trusted reverse proxy.
    Proxy,
}

impl Via {
    /// For the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Anonymous => "anonymous",
            Via::Session => "session",
            Via::Token => "token",
            Via::Proxy => "proxy",
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (the `csm` value in customers.toml for a CSM).
    pub name: String,
    /// Role.
    pub role: Role,
    /// How they authenticated.
    pub via: Via,
    /// Customers assigned in the user's own entry (CSM).
    pub customers: Vec<String>,
    /// Segments assigned in the user's own entry (CSM).
    pub segments: Vec<Segment>,
}

impl Principal {
    /// Everyone, when no authentication is configured.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
            via: Via::Anonymous,
            customers: Vec::new(),
            segments: Vec::new(),
        }
    }
}

/// Which customers a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every customer.
    All,
    /// These customers (possibly none: a viewer).
    Only(BTreeSet<String>),
}

/// Who is asking, and what they may see.
#[derive(Debug, Clone)]
pub struct Access {
    /// The user.
    pub principal: Principal,
    /// Their customers.
    pub scope: Scope,
    /// The session's CSRF token (dashboard sessions only).
    pub csrf: Option<String>,
}

impl Access {
    /// Resolves `principal`'s scope against the customers the view knows
    /// and the CSM assignments of customers.toml (`csm` by customer id).
    pub fn resolve(principal: Principal, view: &View, csm: &HashMap<String, String>) -> Self {
        let scope = match principal.role {
            Role::Admin => Scope::All,
            Role::Viewer => Scope::Only(BTreeSet::new()),
            Role::Csm => {
                let mut ids: BTreeSet<String> = principal.customers.iter().cloned().collect();
                ids.extend(
                    csm.iter()
                        .filter(|(_, name)| **name == principal.name)
                        .map(|(id, _)| id.clone()),
                );
                if !principal.segments.is_empty() {
                    ids.extend(
                        view.customers()
                            .iter()
                            .filter(|(_, c)| {
                                crate::http::api::segment_of(c)
                                    .is_some_and(|s| principal.segments.contains(&s))
                            })
                            .map(|(id, _)| id.to_string()),
                    );
                }
                Scope::Only(ids)
            }
        };
        Self {
            principal,
            scope,
            csrf: None,
        }
    }

    /// With the session's CSRF token.
    pub fn with_csrf(self, csrf: Option<String>) -> Self {
        Self { csrf, ..self }
    }

    /// Full access for everyone (no authentication configured).
    pub fn anonymous() -> Self {
        Self {
            principal: Principal::anonymous(),
            scope: Scope::All,
            csrf: None,
        }
    }

    /// Whether `customer` is in scope.
    pub fn sees(&self, customer: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Only(ids) => ids.contains(customer),
        }
    }

    /// True when every customer is in scope.
    pub fn sees_all(&self) -> bool {
        self.scope == Scope::All
    }

    /// Whether clear operator ids may be shown.
    pub fn sees_operators(&self) -> bool {
        self.principal.role == Role::Admin
    }

    /// Whether the role may list customers and alerts at all.
    pub fn lists_customers(&self) -> bool {
        self.principal.role != Role::Viewer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csm(name: &str, customers: &[&str], segments: &[Segment]) -> Principal {
        Principal {
            name: name.into(),
            role: Role::Csm,
            via: Via::Token,
            customers: customers.iter().map(|c| c.to_string()).collect(),
            segments: segments.to_vec(),
        }
    }

    #[test]
    fn a_csm_sees_assigned_and_own_customers_only() {
        let view = View::default();
        let assigned: HashMap<String, String> = [
            ("acme".to_string(), "alice".to_string()),
            ("bolt".to_string(), "bob".to_string()),
        ]
        .into();
        let alice = Access::resolve(csm("alice", &["cobra"], &[]), &view, &assigned);
        assert!(alice.sees("acme") && alice.sees("cobra"));
        assert!(!alice.sees("bolt"));
        assert!(!alice.sees_all() && !alice.sees_operators());
        let viewer = Access::resolve(
            Principal {
                role: Role::Viewer,
                ..csm("vera", &["acme"], &[])
            },
            &view,
            &assigned,
        );
        assert!(!viewer.sees("acme") && !viewer.lists_customers());
        let admin = Access::resolve(
            Principal {
                role: Role::Admin,
                ..csm("root", &[], &[])
            },
            &view,
            &assigned,
        );
        assert!(admin.sees("anything") && admin.sees_operators());
    }
}
